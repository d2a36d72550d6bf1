"""What a run shows a person: the metrics table and two plots."""

from pathlib import Path

from .corpus import SOURCES

_ROWS = [
    ("Task A accuracy", "accuracy"), ("Task A precision", "precision"), ("Task A recall", "recall"),
    ("Task A F1", "f1"),
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


def plot_confusion_matrix(metrics: dict, path, prefix: str = "eval_") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [[metrics[f"{prefix}confusion_tn"], metrics[f"{prefix}confusion_fp"]],
             [metrics[f"{prefix}confusion_fn"], metrics[f"{prefix}confusion_tp"]]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cells, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cells[i][j]), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Task A (accuracy {metrics[prefix + 'accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
