"""What a run shows a person: the metrics table and two plots."""

from pathlib import Path

from .corpus import SOURCES
from .metrics import confusion_cells

_ROWS = [
    ("Task A accuracy", "accuracy"), ("Task A precision", "precision"), ("Task A recall", "recall"),
    ("Task A F1", "f1"), ("Task A macro F1", "macro_f1"),
    *[(f"Task A accuracy ({source})", f"accuracy_{source}") for source in SOURCES],
    ("Task B accuracy (score > 0.5)", "sentiment_accuracy"), ("Task B ROC-AUC", "sentiment_roc_auc"),
    ("Task B MSE", "sentiment_mse"), ("Task B MAE", "sentiment_mae"), ("Task B Brier", "sentiment_brier"),
    ("Task A / B agreement", "sentiment_agreement"), ("loss", "loss"),
]  # fmt: skip


def metric_rows(metrics: dict, prefix: str = "eval_") -> list[tuple[str, float]]:
    """(label, value) for each known metric present (keys with or without the `eval_` prefix), in table order."""
    rows = []
    for label, key in _ROWS:
        value = metrics.get(prefix + key, metrics.get(key))
        if value is not None:
            rows.append((label, value))
    return rows


def format_metrics_table(metrics: dict, prefix: str = "eval_") -> str:
    """A two-column table of the metrics present (keys with or without the `eval_` prefix)."""
    rows = [(label, f"{value:.4f}") for label, value in metric_rows(metrics, prefix)]
    width = max(len(label) for label, _ in rows)
    rule = "-" * (width + 12)
    return "\n".join([rule, f"{'metric':<{width}}  {'value':>8}", rule, *[f"{l:<{width}}  {v:>8}" for l, v in rows], rule])


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
        ax.plot(*zip(*train), label="train loss (Task A + Task B)")
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


def plot_confusion_matrix(metrics: dict, path, class_names, prefix: str = "eval_") -> Path:
    """The K×K Task A confusion matrix, axes labelled with the model's class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    cells = confusion_cells(metrics, k, prefix)
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * k, 2.0 + 0.8 * k))
    ax.imshow(cells, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cells[i][j]), ha="center", va="center", fontsize=14 if k <= 4 else 9)
    ax.set_xticks(range(k), class_names, rotation=30 if k > 3 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Task A (accuracy {metrics[prefix + 'accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
