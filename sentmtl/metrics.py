"""Offline metrics per task type (scikit-learn and scipy, no Hub fetch), overall and per source domain."""

import numpy as np
from scipy.stats import pearsonr, spearmanr
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
from .tasks import TaskSpec


def task_metrics(task: TaskSpec, outputs, targets, domains=None) -> dict[str, float]:
    """The metrics of one task, unprefixed (`accuracy`, `mse`, `spearman`, …); the caller names them
    `eval_<task>_<metric>`. `outputs`: the head's output (classification / multilabel logits, the score's logit,
    the regression value), the pair cosines (similarity), or `(student, teacher)` embeddings (distillation).
    Rows without this task's target (-100 / NaN, as the losses skip them) are left out of its metrics."""
    if task.type != "distillation":
        outputs, targets, domains = _labelled_rows(task, outputs, targets, domains)
    if task.type == "classification":
        labels, probabilities = np.asarray(targets), softmax(np.asarray(outputs, np.float64))
        return {**classification_metrics(labels, probabilities.argmax(-1), len(task.labels), domains),
                **calibration_metrics(labels, probabilities)}  # fmt: skip
    if task.type == "multilabel":
        return multilabel_metrics(np.asarray(targets), np.asarray(outputs) > 0)
    if task.type == "score":
        return score_metrics(np.asarray(targets, dtype=np.float64), 1 / (1 + np.exp(-np.asarray(outputs, np.float64))))
    if task.type == "regression":
        return regression_metrics(np.asarray(targets, dtype=np.float64), np.asarray(outputs, dtype=np.float64))
    if task.type == "similarity":
        return correlation_metrics(np.asarray(targets, dtype=np.float64), np.asarray(outputs, dtype=np.float64))
    return distillation_metrics(*outputs)


def _labelled_rows(task: TaskSpec, outputs, targets, domains):
    targets, outputs = np.asarray(targets), np.asarray(outputs)
    if task.type == "classification":
        keep = targets >= 0
    else:
        keep = ~np.isnan(targets.astype(np.float64).reshape(len(targets), -1)).any(axis=-1)
    if keep.all():
        return outputs, targets, domains
    return outputs[keep], targets[keep], (np.asarray(domains)[keep] if domains is not None else None)


def classification_metrics(labels, predicted, num_classes: int = 2, domains=None) -> dict[str, float]:
    """Accuracy; precision / recall / F1 of the positive class (id 1) with two classes, macro-averaged with more;
    macro and micro F1; the K×K confusion matrix as `confusion_<true id>_<predicted id>`; accuracy per domain."""
    ids = list(range(num_classes))
    average = {"average": "binary", "pos_label": 1} if num_classes == 2 else {"average": "macro"}
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=ids, zero_division=0, **average)
    out = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(f1_score(labels, predicted, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, predicted, labels=ids, average="micro", zero_division=0)),
    }
    cells = confusion_matrix(labels, predicted, labels=ids)
    out.update({f"confusion_{i}_{j}": int(cells[i, j]) for i in ids for j in ids})
    if domains is not None:
        domains = np.asarray(domains)
        for index, source in enumerate(SOURCES):
            mask = domains == index
            if mask.any():
                out[f"accuracy_{source}"] = float(accuracy_score(labels[mask], predicted[mask]))
    return out


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def reliability_bins(confidences, outcomes, n_bins: int = 15) -> list[dict]:
    """Equal-width bins over [0, 1]: per non-empty bin its bounds, size, mean confidence and the observed rate of
    `outcomes` (1 = correct / positive). The last bin includes 1.0."""
    confidences, outcomes = np.asarray(confidences, np.float64), np.asarray(outcomes, np.float64)
    index = np.minimum((confidences * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        if mask.any():
            bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "count": int(mask.sum()),
                         "confidence": float(confidences[mask].mean()), "rate": float(outcomes[mask].mean())})  # fmt: skip
    return bins


def expected_calibration_error(confidences, outcomes, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the bin-size-weighted mean |rate − confidence| over equal-width bins."""
    bins = reliability_bins(confidences, outcomes, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["rate"] - b["confidence"]) for b in bins) / total) if total else 0.0


def calibration_metrics(labels, probabilities, n_bins: int = 15) -> dict[str, float]:
    """A classifier's calibration: top-label ECE (15 bins), log loss (NLL) and the mean top-label confidence. ECE
    alone rewards a model that says 0.9 about everything, so it is read beside log loss and accuracy."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    if len(labels) == 0:
        return {}
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    true_probability = probabilities[np.arange(len(labels)), labels].clip(1e-12)
    return {"ece": expected_calibration_error(confidence, correct, n_bins),
            "log_loss": float(-np.log(true_probability).mean()), "confidence": float(confidence.mean())}  # fmt: skip


def reliability_points(task: TaskSpec, outputs, targets):
    """(confidences, outcomes) that a reliability diagram of this task plots, or None for types without one:
    classification — top-label probability and whether it was right; score with binary targets — the score as
    P(positive) and whether the target is positive. Rows without the task's target are left out, as in its metrics."""
    if task.type in ("classification", "score"):
        outputs, targets, _ = _labelled_rows(task, outputs, targets, None)
    if task.type == "classification":
        probabilities, labels = softmax(np.asarray(outputs, np.float64)), np.asarray(targets)
        return probabilities.max(-1), (probabilities.argmax(-1) == labels).astype(float)
    if task.type == "score":
        targets = np.asarray(targets, np.float64)
        if len(np.unique(targets >= 0.5)) == 2:
            return 1 / (1 + np.exp(-np.asarray(outputs, np.float64))), (targets >= 0.5).astype(float)
    return None


def confusion_cells(metrics: dict, num_classes: int, prefix: str) -> list[list[int]]:
    """The K×K confusion matrix back from the flat `<prefix>confusion_<i>_<j>` metrics (rows: true class)."""
    return [[metrics[f"{prefix}confusion_{i}_{j}"] for j in range(num_classes)] for i in range(num_classes)]


def multilabel_metrics(targets, predicted) -> dict[str, float]:
    targets, predicted = targets.astype(int), predicted.astype(int)
    return {
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
        "subset_accuracy": float((targets == predicted).all(axis=1).mean()),
    }


def correlation_metrics(targets, predicted) -> dict[str, float]:
    if len(targets) < 2 or np.ptp(targets) == 0 or np.ptp(predicted) == 0:
        return {}
    return {"spearman": float(spearmanr(targets, predicted).statistic), "pearson": float(pearsonr(targets, predicted).statistic)}


def regression_metrics(targets, predicted) -> dict[str, float]:
    return {"mse": float(mean_squared_error(targets, predicted)), "mae": float(mean_absolute_error(targets, predicted)),
            **correlation_metrics(targets, predicted)}  # fmt: skip


def score_metrics(targets, predicted) -> dict[str, float]:
    """A score in [0, 1]: regression metrics, accuracy of `score > 0.5`, and ROC-AUC / Brier when targets are binary."""
    out = regression_metrics(targets, predicted)
    binary_targets = (targets >= 0.5).astype(int)
    out["accuracy"] = float(accuracy_score(binary_targets, (predicted > 0.5).astype(int)))
    if len(np.unique(binary_targets)) == 2:
        out["roc_auc"] = float(roc_auc_score(binary_targets, predicted))
        out["brier"] = float(brier_score_loss(binary_targets, predicted))
        # The score read as P(positive): observed positive rate against it, bin by bin.
        out["ece"] = expected_calibration_error(predicted, binary_targets)
    return out


def distillation_metrics(student, teacher, max_sentences: int = 500) -> dict[str, float]:
    """How well the embedding keeps the starting encoder's similarity structure: Spearman between the two pairwise
    cosine matrices (upper triangles) over the first `max_sentences` sentences."""
    s, t = np.asarray(student[:max_sentences], np.float64), np.asarray(teacher[:max_sentences], np.float64)
    s /= np.linalg.norm(s, axis=1, keepdims=True).clip(1e-12)
    t /= np.linalg.norm(t, axis=1, keepdims=True).clip(1e-12)
    upper = np.triu_indices(len(s), k=1)
    return {"structure_spearman": float(spearmanr((s @ s.T)[upper], (t @ t.T)[upper]).statistic)} if len(s) > 2 else {}


def build_compute_metrics(class_names=LABEL_NAMES):
    """For the plain `Trainer` path (`predictions = (logits, sentiment_scores)`, `label_ids = (labels, scores,
    sources?)`): the seed's two tasks, keys as a run writes them (`classification_*`, `sentiment_*`)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits, sentiment_scores = prediction.predictions[:2]
        label_ids = prediction.label_ids
        labels, scores = np.asarray(label_ids[0]), np.asarray(label_ids[1], dtype=np.float64)
        domains = np.asarray(label_ids[2]) if len(label_ids) > 2 else None
        probabilities = softmax(np.asarray(logits, np.float64))
        a = {**classification_metrics(labels, probabilities.argmax(-1), len(class_names), domains),
             **calibration_metrics(labels, probabilities)}  # fmt: skip
        b = score_metrics(scores, np.asarray(sentiment_scores, dtype=np.float64).reshape(-1))
        return {**{f"classification_{k}": v for k, v in a.items()}, **{f"sentiment_{k}": v for k, v in b.items()}}

    return compute_metrics


compute_metrics = build_compute_metrics()
