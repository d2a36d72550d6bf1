"""Offline metrics for both tasks (no Hub fetch: scikit-learn), overall and per source domain."""

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    roc_auc_score,
)
from transformers import EvalPrediction

from .corpus import LABEL_NAMES, SOURCES


def build_compute_metrics(class_names=LABEL_NAMES):
    """`compute_metrics(EvalPrediction) -> dict` for a Task A with these class names (in id order)."""
    num_classes = len(class_names)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        """`predictions` is `(logits, sentiment_scores)`; `label_ids` is `(labels, scores, sources)` (sources may
        be missing, or -1 for rows without one)."""
        logits, sentiment_scores = prediction.predictions[:2]
        label_ids = prediction.label_ids
        labels, scores = np.asarray(label_ids[0]), np.asarray(label_ids[1], dtype=np.float64)
        sources = np.asarray(label_ids[2]) if len(label_ids) > 2 else np.full(len(labels), -1)
        predicted = np.asarray(logits).argmax(axis=-1)
        sentiment_scores = np.asarray(sentiment_scores, dtype=np.float64).reshape(-1)
        task_b = task_b_metrics(scores, sentiment_scores, predicted if num_classes == 2 else None)
        return {**task_a_metrics(labels, predicted, sources, num_classes), **task_b}

    return compute_metrics


# The seed's binary task: the default `compute_metrics`.
compute_metrics = build_compute_metrics()


def task_a_metrics(labels, predicted, sources=None, num_classes: int = 2) -> dict[str, float]:
    """Accuracy; precision / recall / F1 of the positive class (id 1) for two classes, macro-averaged for more;
    macro F1 always; the K×K confusion matrix as `confusion_<true id>_<predicted id>`."""
    average = {"average": "binary", "pos_label": 1} if num_classes == 2 else {"average": "macro"}
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=list(range(num_classes)), zero_division=0, **average
    )
    out = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(f1_score(labels, predicted, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }
    cells = confusion_matrix(labels, predicted, labels=list(range(num_classes)))
    out.update({f"confusion_{i}_{j}": int(cells[i, j]) for i in range(num_classes) for j in range(num_classes)})
    if sources is not None:
        for index, source in enumerate(SOURCES):
            mask = sources == index
            if mask.any():
                out[f"accuracy_{source}"] = float(accuracy_score(labels[mask], predicted[mask]))
    return out


def confusion_cells(metrics: dict, num_classes: int, prefix: str = "eval_") -> list[list[int]]:
    """The K×K confusion matrix back from the flat `confusion_<i>_<j>` metrics (rows: true class)."""
    return [[metrics[f"{prefix}confusion_{i}_{j}"] for j in range(num_classes)] for i in range(num_classes)]


def task_b_metrics(targets, predicted_scores, task_a_predicted=None) -> dict[str, float]:
    """Regression and calibration metrics of the score; `task_a_predicted` (binary Task A only) adds agreement."""
    binary_targets = (targets >= 0.5).astype(int)
    binary_scores = (predicted_scores > 0.5).astype(int)
    out = {
        "sentiment_mse": float(mean_squared_error(targets, predicted_scores)),
        "sentiment_mae": float(mean_absolute_error(targets, predicted_scores)),
        "sentiment_accuracy": float(accuracy_score(binary_targets, binary_scores)),
    }
    if task_a_predicted is not None:
        # How often Task B's `score > 0.5` and Task A's class say the same thing.
        out["sentiment_agreement"] = float(np.mean(binary_scores == task_a_predicted))
    if len(np.unique(binary_targets)) == 2:
        out["sentiment_roc_auc"] = float(roc_auc_score(binary_targets, predicted_scores))
        out["sentiment_brier"] = float(brier_score_loss(binary_targets, predicted_scores))
    return out
