"""What a run shows a person: the metrics table (one block per task) and the plots."""

from pathlib import Path

from .corpus import SOURCES
from .metrics import confusion_cells, expected_calibration_error, reliability_bins
from .tasks import TaskSpec

# The metrics shown per task type, in table order (eval_results.json has them all, confusion cells included).
SHOWN = {
    "classification": ["accuracy", "precision", "recall", "f1", "macro_f1", *(f"accuracy_{s}" for s in SOURCES),
                       "ece", "log_loss", "confidence"],
    "multilabel": ["micro_f1", "macro_f1", "subset_accuracy"],
    "score": ["accuracy", "roc_auc", "mse", "mae", "brier", "ece", "pearson", "spearman"],
    "regression": ["mse", "mae", "pearson", "spearman"],
    "similarity": ["spearman", "pearson"],
    "distillation": ["structure_spearman"],
}


def metric_rows(metrics: dict, tasks: list[TaskSpec], prefix: str = "eval_") -> list[tuple[str, str, float]]:
    """(task, metric, value) for each known metric present, task by task, then the totals."""
    rows = []
    for task in tasks:
        for name in [*SHOWN[task.type], "loss"]:
            value = metrics.get(f"{prefix}{task.name}_{name}")
            if value is not None:
                rows.append((task.name, name, value))
    for name, key in (("STS-B dev Spearman × 100", "stsb_spearman"), ("loss (weighted sum)", "loss")):
        if f"{prefix}{key}" in metrics:
            rows.append(("all", name, metrics[f"{prefix}{key}"]))
    return rows


def format_metrics_table(metrics: dict, tasks: list[TaskSpec], prefix: str = "eval_") -> str:
    """A three-column table (task, metric, value) of the metrics present."""
    rows = [(task, name, f"{value:.4f}") for task, name, value in metric_rows(metrics, tasks, prefix)]
    if not rows:
        return "(no metrics)"
    width_task = max(len("task"), *(len(r[0]) for r in rows))
    width_name = max(len("metric"), *(len(r[1]) for r in rows))
    rule = "-" * (width_task + width_name + 14)
    lines = [rule, f"{'task':<{width_task}}  {'metric':<{width_name}}  {'value':>8}", rule]
    lines += [f"{t:<{width_task}}  {n:<{width_name}}  {v:>8}" for t, n, v in rows]
    return "\n".join([*lines, rule])


def plot_loss_curve(log_history: list[dict], path) -> Path | None:
    """Training loss per logged step, and eval loss per evaluation, as a PNG. None when nothing was logged."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evals = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss (weighted sum of the tasks')")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_confusion_matrix(metrics: dict, path, task: TaskSpec, prefix: str = "eval_") -> Path:
    """A classification task's K×K confusion matrix, axes labelled with its class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, k = task.labels, len(task.labels)
    cells = confusion_cells(metrics, k, f"{prefix}{task.name}_")
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * k, 2.0 + 0.8 * k))
    ax.imshow(cells, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cells[i][j]), ha="center", va="center", fontsize=14 if k <= 4 else 9)
    ax.set_xticks(range(k), names, rotation=30 if k > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{task.name} (accuracy {metrics[f'{prefix}{task.name}_accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_reliability(confidences, outcomes, path, task: TaskSpec, n_bins: int = 15) -> Path:
    """A reliability diagram: per confidence bin, the observed rate against the diagonal of perfect calibration,
    with the bin sizes below (ECE in the title). Classification: top-label confidence vs accuracy; a score: the
    score as P(positive) vs the positive rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = reliability_bins(confidences, outcomes, n_bins)
    ece = expected_calibration_error(confidences, outcomes, n_bins)
    classification = task.type == "classification"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1 / n_bins
    top.bar([b["low"] for b in bins], [b["rate"] for b in bins], width=width, align="edge", edgecolor="black",
            color="#4c72b0", label="accuracy" if classification else "positive rate")  # fmt: skip
    # The bin's mean confidence drawn over its bar: the gap between marker and bar top is that bin's error.
    top.plot([(b["low"] + b["high"]) / 2 for b in bins], [b["confidence"] for b in bins], "_", color="#dd8452",
             markersize=14, markeredgewidth=2.5, label=f"bin mean {'confidence' if classification else 'score'}")  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy" if classification else "fraction positive")
    top.set_title(f"{task.name}: reliability (ECE {ece:.3f}, {n_bins} bins)")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar([b["low"] for b in bins], [b["count"] for b in bins], width=width, align="edge", color="#999999")
    bottom.set_yscale("log")
    bottom.set_ylabel("examples")
    bottom.set_xlabel("top-label confidence" if classification else "score (P positive)")
    bottom.set_xlim(0.5 if classification else 0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
