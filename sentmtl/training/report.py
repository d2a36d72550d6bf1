"""What a run shows a person: the metrics table (one block per task) and the plots."""

from pathlib import Path

from ..model.task_spec import TaskSpec
from ..tasks.io import task_io
from ..tasks.metrics import expected_calibration_error, reliability_bins


def metric_rows(metrics: dict, tasks: list[TaskSpec], prefix: str = "eval_") -> list[tuple[str, str, float]]:
    """(task, metric, value) for each metric its type shows that is present, task by task, then the totals.
    A shown name ending in `*` stands for every metric with that prefix (per-domain accuracies)."""
    rows = []
    for task in tasks:
        head = f"{prefix}{task.name}_"
        for name in [*task_io(task).shown_for(task), "loss", "rows"]:
            names = (
                [key[len(head) :] for key in metrics if key.startswith(head + name[:-1])]
                if name.endswith("*")
                else [name]
            )
            rows += [(task.name, n, metrics[head + n]) for n in names if metrics.get(head + n) is not None]
    if f"{prefix}loss" in metrics:  # the training objective over the tasks' eval losses
        rows.append(("all", "loss (training objective)", metrics[f"{prefix}loss"]))
    return rows


def format_metrics_table(metrics: dict, tasks: list[TaskSpec], prefix: str = "eval_") -> str:
    """A three-column table (task, metric, value) of the metrics present."""
    rows = [
        (task, name, str(value) if isinstance(value, int) else f"{value:.4f}")  # counts stay counts
        for task, name, value in metric_rows(metrics, tasks, prefix)
    ]
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


def plot_confusion_matrix(cells, path, task: TaskSpec) -> Path:
    """A classification task's K×K confusion matrix (rows: the true class), axes labelled with its class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, k = task.labels, len(task.labels)
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * k, 2.0 + 0.8 * k))
    ax.imshow(cells, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cells[i][j])), ha="center", va="center", fontsize=14 if k <= 4 else 9)
    ax.set_xticks(range(k), names, rotation=30 if k > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = sum(sum(row) for row in cells)
    accuracy = sum(cells[i][i] for i in range(k)) / total if total else float("nan")
    ax.set_title(f"{task.name} (accuracy {accuracy:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_reports(output_dir: Path, log_history: list, tasks: list[TaskSpec], outputs: dict, draw: bool = True) -> dict:
    """The run's plots: the loss curve, and each task's figures from its evaluation arrays (`outputs`: {task:
    (outputs, targets)}; `TaskIO.figures` says what each type draws). Returns {task: reliability bins};
    `draw=False` (processes other than the main one) only computes them."""
    if draw:
        plot_loss_curve(log_history, output_dir / "loss_curve.png")
    reliability = {}
    for task in tasks:
        if task.name not in outputs:
            continue
        figures = task_io(task).figures(task, *outputs[task.name])
        if draw and "confusion" in figures:
            plot_confusion_matrix(figures["confusion"], output_dir / f"confusion_{task.name}.png", task)
        if "reliability" in figures:
            if draw:
                plot_reliability(*figures["reliability"], output_dir / f"reliability_{task.name}.png", task)
            reliability[task.name] = reliability_bins(*figures["reliability"])
    return reliability


def plot_reliability(confidences, outcomes, path, task: TaskSpec, n_bins: int = 15) -> Path:
    """A reliability diagram: per confidence bin, the observed rate against the diagonal of perfect calibration,
    with the bin sizes below (ECE in the title). Classification: top-label confidence vs accuracy; a score: the
    score as P(positive) vs the positive rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = reliability_bins(confidences, outcomes, n_bins)
    ece = expected_calibration_error(confidences, outcomes, n_bins)
    rate_name, confidence_name, mark_name = task_io(task).reliability_axes
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1 / n_bins
    top.bar(
        [b["low"] for b in bins],
        [b["rate"] for b in bins],
        width=width,
        align="edge",
        edgecolor="black",
        color="#4c72b0",
        label=rate_name,
    )
    # The bin's mean confidence drawn over its bar: the gap between marker and bar top is that bin's error.
    top.plot(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["confidence"] for b in bins],
        "_",
        color="#dd8452",
        markersize=14,
        markeredgewidth=2.5,
        label=f"bin mean {mark_name}",
    )
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel(rate_name)
    top.set_title(f"{task.name}: reliability (ECE {ece:.3f}, {n_bins} bins)")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar([b["low"] for b in bins], [b["count"] for b in bins], width=width, align="edge", color="#999999")
    bottom.set_yscale("log")
    bottom.set_ylabel("examples")
    bottom.set_xlabel(confidence_name)
    bottom.set_xlim(*task_io(task).reliability_range(task))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
