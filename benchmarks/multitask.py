#!/usr/bin/env python
"""Task A accuracy, Task B ROC-AUC, STS-B dev Spearman and training time per configuration, over seeds.

    python benchmarks/multitask.py --data_dir ../shared/data/sentiment_labelled_sentences \\
        --stsb_dir ../shared/data/stsbenchmark --seeds 42 43 44 45 46

Each (scenario, seed) is one `run_mtl.py` process writing to --runs_dir; a finished run (eval_results.json there)
is reused, so the benchmark can run in parts. Scenarios:

- `before`: the design before tasks: heads on the unit-norm embedding without a logit scale, no distillation
  (`--head_logit_scale 0 --distillation_weight 0`);
- `default`: `make run`'s configuration (scaled heads + distillation of the starting encoder's similarity structure);
- `multitask_sts`: configs/multitask_sts.yaml (+ STS-B train pairs, CoSENT, both corpora distilled, a 384-d
  projection starting as the identity);
- `multitask_domain`: configs/multitask_domain.yaml (+ the 3-class source domain).

Prints a Markdown table (mean ± std over seeds, and n) and writes `summary.json` ({scenario: {metric: {mean, std,
n}}}) and `multitask.png` to --output_dir.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "before": ["--head_logit_scale", "0", "--distillation_weight", "0"],
    "default": [],
    "multitask_sts": ["configs/multitask_sts.yaml"],
    "multitask_domain": ["configs/multitask_domain.yaml"],
}
# The bundled all-MiniLM-L6-v2's own STS-B dev Spearman × 100 (mean pooling, no training; the first row of README
# "Multi-task results"): the line a trained embedding should stay near, drawn in the plot.
UNTOUCHED_ENCODER_STSB = 86.7
METRICS = {  # column → key in eval_results.json / train_results.json
    "Task A accuracy": "eval_classification_accuracy",
    "Task B ROC-AUC": "eval_sentiment_roc_auc",
    "STS-B dev Spearman": "eval_stsb_spearman",
    "domain accuracy": "eval_domain_accuracy",
    "train time (s)": "train_runtime",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder.")
    parser.add_argument("--stsb_dir", required=True, help="The STS Benchmark folder (sts-train.csv, sts-dev.csv).")
    parser.add_argument(
        "--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS), help="Which configurations to run."
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46], help="One run per seed.")
    parser.add_argument(
        "--max_seeds",
        nargs="*",
        default=[],
        help="scenario=N: run only the first N seeds of that scenario (e.g. before=1).",
    )
    parser.add_argument("--runs_dir", default="results/runs/multitask", help="Per-run folders (not committed).")
    parser.add_argument("--output_dir", default="results/multitask", help="Where summary.json and the plot go.")
    return parser.parse_args(argv)


def run_one(scenario: str, seed: int, args) -> dict:
    out = Path(args.runs_dir) / scenario / f"seed{seed}"
    if not (out / "eval_results.json").is_file():
        flags = SCENARIOS[scenario]
        config, rest = (flags[:1], flags[1:]) if flags and flags[0].endswith(".yaml") else ([], flags)
        command = [
            sys.executable,
            "run_mtl.py",
            *config,
            "--data_dir",
            args.data_dir,
            "--seed",
            str(seed),
            "--output_dir",
            str(out),
            "--overwrite_output_dir",
            "--disable_tqdm",
            "true",
            "--sts_eval_file",
            str(Path(args.stsb_dir) / "sts-dev.csv"),
            *rest,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{scenario} seed {seed} failed:\n{done.stderr[-3000:]}")
        print(f"  {scenario} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    values = json.loads((out / "eval_results.json").read_text())
    values.update(json.loads((out / "train_results.json").read_text()))
    # sentmtl reports every correlation on 0–1 since 0.2.0; the tables and results/ quote STS-B × 100.
    if "eval_stsb_spearman" in values:
        values["eval_stsb_spearman"] *= 100
    return values


def main(argv=None) -> int:
    args = parse_args(argv)
    limits = dict(item.split("=") for item in args.max_seeds)
    results = {}
    for scenario in args.scenarios:
        seeds = args.seeds[: int(limits[scenario])] if scenario in limits else args.seeds
        runs = [run_one(scenario, seed, args) for seed in seeds]
        results[scenario] = {}
        for _column, key in METRICS.items():
            values = [run[key] for run in runs if key in run]
            if values:
                results[scenario][key] = {
                    "mean": statistics.mean(values),
                    "n": len(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values,
                }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(json.dumps(results, indent=2))
    print("\n| scenario | n | " + " | ".join(METRICS) + " |")
    print("| --- | ---: |" + " ---: |" * len(METRICS))
    for scenario, metrics in results.items():
        n = max((m["n"] for m in metrics.values()), default=0)
        cells = []
        for key in METRICS.values():
            m = metrics.get(key)
            if m is None:
                cells.append("–")
            elif key.endswith("accuracy"):
                cells.append(f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}%")
            elif key == "train_runtime":
                cells.append(f"{statistics.median(m['values']):.0f}")
            elif key.endswith("spearman"):
                cells.append(f"{m['mean']:.1f} ± {m['std']:.1f}")
            else:
                cells.append(f"{m['mean']:.3f} ± {m['std']:.3f}")
        print(f"| {scenario} | {n} | " + " | ".join(cells) + " |")
    plot(results, output_dir / "multitask.png")
    print(f"\nwrote {output_dir / 'summary.json'} and {output_dir / 'multitask.png'} (train time: median)")
    return 0


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(results)
    for ax, key, label in (
        (axes[0], "eval_classification_accuracy", "Task A accuracy (%)"),
        (axes[1], "eval_stsb_spearman", "STS-B dev Spearman × 100"),
    ):
        means = [results[n].get(key, {}).get("mean", 0) * (100 if "accuracy" in key else 1) for n in names]
        stds = [results[n].get(key, {}).get("std", 0) * (100 if "accuracy" in key else 1) for n in names]
        ax.barh(names, means, xerr=stds, color="#1f77b4")
        for y, mean in enumerate(means):  # the values: bars of 86 and 88.6 on a 0–90 axis look alike
            ax.annotate(f"{mean:.1f}", (mean, y), xytext=(4, 6), textcoords="offset points", fontsize=8)
        if key == "eval_stsb_spearman":
            ax.axvline(UNTOUCHED_ENCODER_STSB, color="#d62728", linestyle="--", linewidth=1)
            ax.text(
                UNTOUCHED_ENCODER_STSB,
                len(names) - 0.45,
                f"untouched encoder {UNTOUCHED_ENCODER_STSB}",
                color="#d62728",
                fontsize=8,
                ha="right",
            )
        ax.set_xlabel(label)
        ax.set_xlim(min(means) * 0.95 if min(means) > 50 else 0, max(means) * 1.02 + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
