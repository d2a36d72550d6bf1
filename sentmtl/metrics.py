"""Offline metrics for both tasks (no Hub fetch: scikit-learn), overall and per source domain."""

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    roc_auc_score,
)
from transformers import EvalPrediction

from .corpus import SOURCES


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Task A accuracy / precision / recall / F1 (positive class), Task B regression and calibration metrics.

    `predictions` is `(logits, sentiment_scores)`; `label_ids` is `(labels, scores, sources)` (sources may be
    missing, or -1 for rows without one).
    """
    logits, sentiment_scores = prediction.predictions[:2]
    label_ids = prediction.label_ids
    labels, scores = np.asarray(label_ids[0]), np.asarray(label_ids[1], dtype=np.float64)
    sources = np.asarray(label_ids[2]) if len(label_ids) > 2 else np.full(len(labels), -1)
    predicted = np.asarray(logits).argmax(axis=-1)
    sentiment_scores = np.asarray(sentiment_scores, dtype=np.float64).reshape(-1)
    return {**task_a_metrics(labels, predicted, sources), **task_b_metrics(scores, sentiment_scores, predicted)}


def task_a_metrics(labels, predicted, sources=None) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1])
    out = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "confusion_tn": int(tn), "confusion_fp": int(fp), "confusion_fn": int(fn), "confusion_tp": int(tp),
    }  # fmt: skip
    if sources is not None:
        for index, source in enumerate(SOURCES):
            mask = sources == index
            if mask.any():
                out[f"accuracy_{source}"] = float(accuracy_score(labels[mask], predicted[mask]))
    return out


def task_b_metrics(targets, predicted_scores, task_a_predicted) -> dict[str, float]:
    binary_targets = (targets >= 0.5).astype(int)
    binary_scores = (predicted_scores > 0.5).astype(int)
    out = {
        "sentiment_mse": float(mean_squared_error(targets, predicted_scores)),
        "sentiment_mae": float(mean_absolute_error(targets, predicted_scores)),
        "sentiment_accuracy": float(accuracy_score(binary_targets, binary_scores)),
        # How often Task B's `score > 0.5` and Task A's class say the same thing.
        "sentiment_agreement": float(np.mean(binary_scores == task_a_predicted)),
    }
    if len(np.unique(binary_targets)) == 2:
        out["sentiment_roc_auc"] = float(roc_auc_score(binary_targets, predicted_scores))
        out["sentiment_brier"] = float(brier_score_loss(binary_targets, predicted_scores))
    return out
