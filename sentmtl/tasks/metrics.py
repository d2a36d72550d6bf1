"""Offline metrics as pure functions of arrays (scikit-learn and scipy, no Hub fetch). Which of them a task reports is
its type's business (`sentmtl.tasks.io`)."""

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


def classification_metrics(labels, predicted, num_classes: int = 2, domains=None, domain_names=()) -> dict[str, float]:
    """Accuracy; precision / recall / F1 of class id 1 with two classes (the task names it: `f1_<label>`),
    macro-averaged with more;
    macro and micro F1; the K×K confusion matrix as `confusion_<true id>_<predicted id>`; accuracy per domain
    (`accuracy_<name>`, domain id i named `domain_names[i]`; only where the data names its domains)."""
    ids = list(range(num_classes))
    average = {"average": "binary", "pos_label": 1} if num_classes == 2 else {"average": "macro"}
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=ids, zero_division=0, **average
    )
    out = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(f1_score(labels, predicted, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, predicted, labels=ids, average="micro", zero_division=0)),
    }
    cells = confusion(labels, predicted, num_classes)
    out.update({f"confusion_{i}_{j}": int(cells[i, j]) for i in ids for j in ids})
    if domains is not None and len(domain_names):
        domains = np.asarray(domains)
        for index, source in enumerate(domain_names):
            mask = domains == index
            if mask.any():
                out[f"accuracy_{source}"] = float(accuracy_score(labels[mask], predicted[mask]))
    return out


def sigmoid(logits):
    return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))


def is_binary(targets) -> bool:
    """Targets that are all 0 or 1, both present: what ROC-AUC, Brier and calibration measure against."""
    targets = np.asarray(targets, np.float64)
    return bool(np.isin(targets, (0.0, 1.0)).all()) and len(np.unique(targets)) == 2


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
            bins.append(
                {
                    "low": b / n_bins,
                    "high": (b + 1) / n_bins,
                    "count": int(mask.sum()),
                    "confidence": float(confidences[mask].mean()),
                    "rate": float(outcomes[mask].mean()),
                }
            )
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
    return {
        "ece": expected_calibration_error(confidence, correct, n_bins),
        "log_loss": float(-np.log(true_probability).mean()),
        "confidence": float(confidence.mean()),
    }


def confusion(labels, predicted, num_classes: int) -> np.ndarray:
    """The K×K confusion matrix (rows: the true class, columns: the predicted one)."""
    return confusion_matrix(labels, predicted, labels=list(range(num_classes)))


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
    return {
        "spearman": float(spearmanr(targets, predicted).statistic),
        "pearson": float(pearsonr(targets, predicted).statistic),
    }


def regression_metrics(targets, predicted) -> dict[str, float]:
    return {
        "mse": float(mean_squared_error(targets, predicted)),
        "mae": float(mean_absolute_error(targets, predicted)),
        **correlation_metrics(targets, predicted),
    }


def score_metrics(targets, predicted) -> dict[str, float]:
    """A score in [0, 1]: regression metrics; with binary targets (all 0 or 1) also the accuracy of `score > 0.5`,
    ROC-AUC, Brier and ECE, which read the score as P(positive). Against soft targets those would be wrong (a perfect
    predictor of 0.2, 0.4, 0.6, 0.8 would get Brier 0.1), so they are left out there."""
    out = regression_metrics(targets, predicted)
    if is_binary(targets):
        binary_targets = targets.astype(int)
        out["accuracy"] = float(accuracy_score(binary_targets, (predicted > 0.5).astype(int)))
        out["roc_auc"] = float(roc_auc_score(binary_targets, predicted))
        out["brier"] = float(brier_score_loss(binary_targets, predicted))
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


RETRIEVAL_CUTOFFS = {"recall": (1, 10), "mrr": (10,), "ndcg": (10,)}


def retrieval_metrics(queries, documents, relevant: list[set[int]], chunk_size: int = 1024) -> dict[str, float]:
    """Recall@1/@10, MRR@10 and nDCG@10 of ranking `documents` `[m, d]` by cosine similarity to each of `queries`
    `[n, d]`, `relevant[i]` holding the indices of query i's relevant documents (binary relevance). The definitions
    of sentence-transformers' `InformationRetrievalEvaluator`: recall@k = relevant found in the top k / relevant;
    MRR@10 = 1 / rank of the first relevant document in the top 10 (0 if none); nDCG@10 = Σ rel_i / log2(i + 1)
    over the top 10, over the same for an ideal ranking; ties broken by the lower document index; means over
    queries. Every document is ranked for every query, its own text included (as theirs: no self-exclusion)."""
    queries = _unit(np.asarray(queries, np.float32))
    documents = _unit(np.asarray(documents, np.float32))
    if len(queries) != len(relevant):
        raise ValueError(f"{len(queries)} queries but {len(relevant)} relevant sets.")
    top = min(10, len(documents))
    ranked = []
    for start in range(0, len(queries), chunk_size):  # bounded memory: chunk × m scores at a time
        scores = queries[start : start + chunk_size] @ documents.T
        # A stable sort on −score puts equal scores in document order (the lower index first).
        ranked.append(np.argsort(-scores, axis=1, kind="stable")[:, :top])
    ranked = np.concatenate(ranked) if ranked else np.zeros((0, top), dtype=int)
    out = {f"recall@{k}": [] for k in RETRIEVAL_CUTOFFS["recall"]} | {"mrr@10": [], "ndcg@10": []}
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for hits, wanted in zip(ranked, relevant):
        found = np.array([doc in wanted for doc in hits], dtype=float)
        for k in RETRIEVAL_CUTOFFS["recall"]:
            out[f"recall@{k}"].append(found[:k].sum() / len(wanted))
        first = np.flatnonzero(found[:10])
        out["mrr@10"].append(1.0 / (first[0] + 1) if len(first) else 0.0)
        ideal = discounts[: min(len(wanted), 10)].sum()
        out["ndcg@10"].append(float((found[:10] * discounts[: len(found[:10])]).sum() / ideal))
    return {name: float(np.mean(values)) if values else float("nan") for name, values in out.items()}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
