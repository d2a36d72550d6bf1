#!/usr/bin/env python
"""Data at scale: preparation time, time per step and memory of one run file against the number of rows.

    python benchmarks/scale.py --data_dir ../shared/data/sentiment_labelled_sentences \\
        --stsb_dir ../shared/data/stsbenchmark --rows 10000 100000 1000000 --baseline_repo /tmp/sentmtl-0.3 \\
        --baseline_rows 10000 100000

Builds CSV files of N rows (never committed: under --work_dir), each row a corpus sentence followed by the first
words of an STS-B sentence (so every row is a distinct text of about the corpus's length), labelled with the corpus
sentence's sentiment; runs the same run file on each — a classification task and a distillation task on that file,
`--max_steps` steps, no evaluation during training, a final evaluation bounded by `--max_eval_samples` — twice: the
first run with a cold cache (teacher vectors, the converted table and its tokens computed and cached), the second
reading them. Each run is its own process under `/usr/bin/time -v`.

Measured per run: *preparation* = wall time from the process start to the first training step (teacher vectors for
every row included); time per training step; peak anonymous memory (RssAnon, sampled every 0.2 s: what the process
holds itself) and peak RSS as `/usr/bin/time -v` reports it (which also counts touched pages of memory-mapped
files). `--baseline_repo`: a checkout of an earlier sentmtl, run the same way (without --max_eval_samples, which it
lacks) on `--baseline_rows`, side by side. Writes `scale.json`, `scale.md` and `scale.png` to --output_dir.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import procmem
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=False, help="The UCI corpus folder.")
    parser.add_argument("--stsb_dir", required=False, help="The STS Benchmark folder (sts-train.csv, sts-dev.csv).")
    parser.add_argument("--rows", nargs="*", type=int, default=[10_000, 100_000, 1_000_000], help="Row counts to run.")
    parser.add_argument("--steps", type=int, default=20, help="Training steps per run (--max_steps).")
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="Held-out rows the final evaluation uses.")
    parser.add_argument("--baseline_repo", default=None, help="A checkout of an earlier sentmtl to run beside.")
    parser.add_argument("--baseline_rows", nargs="*", type=int, default=[10_000], help="Row counts the baseline runs.")
    parser.add_argument("--work_dir", default="/tmp/sentmtl_scale", help="Data files, caches and runs (not committed).")
    parser.add_argument("--output_dir", default="results/scale", help="Where the table, JSON and plot go.")
    parser.add_argument("--keep_cache", action="store_true", help="Do not clear the caches before the first run.")
    parser.add_argument(
        "--attempts",
        nargs="+",
        default=["cold", "warm"],
        choices=["cold", "warm"],
        help="Which runs of sentmtl per row count: cold (caches cleared first, unless --keep_cache) "
        "and warm (reading the caches the cold run left).",
    )
    parser.add_argument(
        "--stream_rows", type=int, default=5_000_000, help="Rows of the streamed file (0: no streaming runs)."
    )
    parser.add_argument("--stream_steps", type=int, default=2000, help="Training steps of the streamed runs.")
    parser.add_argument(
        "--stream_interrupt_at",
        type=int,
        default=300,
        help="The second streamed run is interrupted (SIGINT) after this step, then resumed (0: no "
        "second run; tests/e2e/test_interrupt_and_resume.py checks the resume on small data).",
    )
    # The worker: one run in this process, timing its first training step.
    parser.add_argument("--worker", nargs=3, metavar=("RUN_FILE", "OUTPUT_DIR", "MARKER"), help=argparse.SUPPRESS)
    parser.add_argument("--worker_flags", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker_interrupt_at", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_rows(
    data_dir, stsb_dir, count: int, path: Path, seed: int = 0, dev_path: Path | None = None, dev_rows: int = 0
) -> None:
    """`count` distinct rows: a corpus sentence + the first 3–6 words of an STS-B sentence; the corpus label. With
    `dev_path`, `dev_rows` more (none of them in the first file) go there."""
    sys.path.insert(0, str(REPO_ROOT))
    from sentmtl.data.corpus import load_sentiment_corpus
    from sentmtl.data.stsb import read_stsb, stsb_file

    corpus = load_sentiment_corpus(data_dir)
    sentences, labels = list(corpus["sentence"]), np.asarray(corpus["label"])
    sts = read_stsb(stsb_file(stsb_dir, "train"))
    words = sorted({" ".join(s.split()[: 3 + len(s) % 4]) for s in [*sts["sentence1"], *sts["sentence2"]]})
    rng = np.random.default_rng(seed)
    total = count + dev_rows
    pairs = np.unique(rng.integers(0, len(sentences) * len(words), size=int(total * 1.2), dtype=np.int64))
    pairs = rng.permutation(pairs)[:total]
    if len(pairs) < total:
        raise ValueError(f"{total} rows: only {len(pairs)} distinct combinations drawn.")
    import pyarrow as pa
    import pyarrow.csv as pcsv

    first, second = pairs // len(words), pairs % len(words)
    table = pa.table(
        {
            "sentence": [f"{sentences[i]} {words[j]}" for i, j in zip(first.tolist(), second.tolist())],
            "label": np.where(labels[first] == 1, "positive", "negative"),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(table.slice(0, count), str(path))
    if dev_path is not None:
        pcsv.write_csv(table.slice(count), str(dev_path))


def run_file(data: Path, path: Path, validation: Path | None = None) -> Path:
    """Classification + distillation on `data`; with `validation`, streamed (evaluated on `validation`)."""
    source = {
        "train_file": str(data),
        **({"validation_file": str(validation), "streaming": True} if validation else {}),
    }
    path.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "data": source},
                    {"name": "distillation", "type": "distillation", "data": source},
                ]
            }
        )
    )
    return path


def worker(run_path, output_dir, marker, flags, interrupt_at=None) -> None:
    """One run (`sentmtl.training.run.run`) with a callback that writes when the first and the last training step began."""
    from transformers import TrainerCallback

    from sentmtl.training.run import parse_args as run_args
    from sentmtl.training.run import run

    times = {"start": float(os.environ["SCALE_STARTED"])}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times.setdefault("first_step", time.time())

        def on_step_end(self, args, state, control, **kwargs):
            times["last_step_end"], times["steps"] = time.time(), state.global_step
            times.setdefault("first_global_step", state.global_step)
            if interrupt_at is not None and state.global_step == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would: a checkpoint is saved, the run stops

        def on_train_end(self, args, state, control, **kwargs):
            times["train_end"] = time.time()

    from sentmtl.training.run import RunInterrupted

    try:
        result = run(*run_args([run_path, "--output_dir", output_dir, *flags.split()]), callbacks=[Timer()])
        times["eval"] = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    except RunInterrupted:
        times["interrupted"] = True
    times["end"] = time.time()
    Path(marker).write_text(json.dumps(times))


def measure(command: list[str], env: dict, marker: Path) -> dict:
    """Run `command` under /usr/bin/time -v; sample the Python process's RssAnon; return the timings and peaks."""
    started = time.time()
    env = {**env, "SCALE_STARTED": str(started)}
    report, log = marker.with_suffix(".time"), marker.with_suffix(".log")
    with open(log, "w") as handle:  # a file, not a pipe: a long run's progress bars would fill a pipe and block it
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", "-o", str(report), *command], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    peak_anon, child, timeline = 0, None, []  # (seconds, RssAnon, VmRSS) every 0.2 s
    while process.poll() is None:
        if child is None:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            text = children.read_text().split() if children.exists() else []
            child = int(text[0]) if text else None
        if child is not None:
            try:
                memory = procmem.memory_bytes(child, ("RssAnon", "VmRSS"))
                peak_anon = max(peak_anon, memory["RssAnon"])
                timeline.append((round(time.time() - started, 2), memory["RssAnon"], memory["VmRSS"]))
            except OSError:  # the process is starting or gone
                pass
        time.sleep(0.2)
    if process.returncode not in (0, 128 + signal.SIGINT):  # an interrupted run (asked for) exits with 130
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    peak_rss = next(
        int(line.split(":")[1]) * 1024
        for line in report.read_text().splitlines()
        if "Maximum resident set size" in line
    )
    times = json.loads(marker.read_text())
    steps = times.get("steps", 0)
    steps -= times.get("first_global_step", 1) - 1  # a resumed run starts counting where it left off
    per_step = (times["last_step_end"] - times["first_step"]) / max(1, steps - 1) if steps > 1 else float("nan")
    eval_metrics = times.get("eval", {})
    return {
        "preparation_s": times["first_step"] - times["start"],
        "step_s": per_step,
        "total_s": times["end"] - times["start"],
        "peak_anon_gb": peak_anon / 1e9,
        "peak_rss_gb": peak_rss / 1e9,
        "eval_rows": {k: v for k, v in eval_metrics.items() if k.endswith("_rows")},
        "eval": eval_metrics,
        "last_step": times.get("steps"),
        "timeline": timeline,
    }


def one(
    args,
    label: str,
    repo: Path,
    rows: int,
    run_yaml: Path,
    cache: Path,
    attempt: str,
    extra: str = "",
    name: str | None = None,
    fresh: bool = True,
    interrupt_at: int | None = None,
    steps: int | None = None,
) -> dict:
    """One run of `run_yaml` in its own process, measured (`measure`); printed and returned as a row."""
    out = Path(args.work_dir) / "runs" / (name or f"{label}-{rows}-{attempt}")
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    flags = (
        f"--max_steps {steps or args.steps} --eval_strategy no --save_strategy no --bf16 true --report_to none {extra}"
    )
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(repo), "TOKENIZERS_PARALLELISM": "true"}
    marker = Path(f"{out}-{attempt}.marker")
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "scale.py"),
        "--worker",
        str(run_yaml),
        str(out),
        str(marker),
        f"--worker_flags={flags}",
        *([f"--worker_interrupt_at={interrupt_at}"] if interrupt_at else []),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    result = measure(command, env, marker)
    print(
        f"{label:>9} {rows:>9,} {attempt:>9}: preparation {result['preparation_s']:7.1f} s, step "
        f"{result['step_s']:.3f} s, peak anon {result['peak_anon_gb']:.2f} GB, peak RSS {result['peak_rss_gb']:.2f} GB",
        flush=True,
    )
    return {"version": label, "rows": rows, "cache": attempt, **result}


def streamed(args, work: Path) -> tuple[list[dict], dict]:
    """A streamed file of --stream_rows rows (and a held-out file of 2,000): --stream_steps steps uninterrupted;
    then the same run interrupted after --stream_interrupt_at steps and resumed. The resumed run must end where the
    uninterrupted one did (the same final evaluation)."""
    data, dev = work / "data" / f"stream-{args.stream_rows}.csv", work / "data" / "stream-dev.csv"
    if not data.exists() or not dev.exists():
        build_rows(args.data_dir, args.stsb_dir, args.stream_rows, data, dev_path=dev, dev_rows=2000)
    cache = work / "cache-stream"
    shutil.rmtree(cache, ignore_errors=True)
    run_yaml = run_file(data, work / "stream.yaml", dev)
    common = dict(steps=args.stream_steps, extra=f"--max_eval_samples {args.max_eval_samples}")
    rows = [one(args, "stream", REPO_ROOT, args.stream_rows, run_yaml, cache, "whole", name="stream-whole", **common)]
    if not args.stream_interrupt_at:
        return rows, None
    rows.append(
        one(
            args,
            "stream",
            REPO_ROOT,
            args.stream_rows,
            run_yaml,
            cache,
            "stopped",
            name="stream-resumed",
            interrupt_at=args.stream_interrupt_at,
            **common,
        )
    )
    resumed = one(
        args,
        "stream",
        REPO_ROOT,
        args.stream_rows,
        run_yaml,
        cache,
        "resumed",
        name="stream-resumed",
        fresh=False,
        **{**common, "extra": common["extra"] + " --resume_from_checkpoint auto"},
    )
    rows.append(resumed)
    whole = rows[0]["eval"]
    keys = [k for k in whole if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))]
    differences = {k: abs(whole[k] - resumed["eval"].get(k, float("nan"))) for k in keys}
    check = {
        "interrupted_after": rows[1]["last_step"],
        "resumed_to": resumed["last_step"],
        "max_metric_difference": max(differences.values()) if differences else float("nan"),
        "largest": max(differences, key=differences.get) if differences else None,
    }
    print(
        f"resume: stopped after step {check['interrupted_after']}, resumed to {check['resumed_to']}; largest "
        f"difference from the uninterrupted run's final evaluation {check['max_metric_difference']:.2e} "
        f"({check['largest']})",
        flush=True,
    )
    return rows, check


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker, args.worker_flags, args.worker_interrupt_at)
        return 0
    work = Path(args.work_dir)
    results = []
    versions = [("sentmtl", REPO_ROOT, args.rows, True)]
    if args.baseline_repo:
        versions.insert(0, ("baseline", Path(args.baseline_repo).resolve(), args.baseline_rows, False))
    for rows in sorted(set(args.rows) | set(args.baseline_rows if args.baseline_repo else [])):
        data = work / "data" / f"rows-{rows}.csv"
        if not data.exists():
            build_rows(args.data_dir, args.stsb_dir, rows, data)
        for label, repo, counts, bounded in versions:
            if rows not in counts:
                continue
            cache = work / f"cache-{label}"
            if not args.keep_cache:
                shutil.rmtree(cache, ignore_errors=True)
            run_yaml = run_file(data, work / f"scale-{rows}.yaml")
            extra = f"--max_eval_samples {args.max_eval_samples}" if bounded else ""  # the baseline lacks the flag
            for attempt in args.attempts if label == "sentmtl" else ("cold",):  # the baseline caches nothing
                results.append(one(args, label, repo, rows, run_yaml, cache, attempt, extra))
    stream_check = None
    if args.stream_rows:
        stream_rows, stream_check = streamed(args, work)
        results += stream_rows
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/scale.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    (out / "scale.json").write_text(
        json.dumps({"command": command, "results": results, "stream_resume": stream_check}, indent=1)
    )
    lines = [
        f"`{command}` (this machine: 2 CPU cores, bf16 autocast)",
        "",
        "| version | rows | cache | preparation s | per row ms | step s | peak anon GB | peak RSS GB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['version']} | {r['rows']:,} | {r['cache']} | {r['preparation_s']:.1f} | "
            f"{1000 * r['preparation_s'] / r['rows']:.3f} | {r['step_s']:.3f} | {r['peak_anon_gb']:.2f} | "
            f"{r['peak_rss_gb']:.2f} |"
        )
    if stream_check:
        lines += [
            "",
            f"Streamed ({args.stream_rows:,} rows, {args.stream_steps} steps, shuffle buffer 10,000): "
            f"'whole' ran uninterrupted; 'stopped' was interrupted after step {stream_check['interrupted_after']} "
            f"and 'resumed' continued it to step {stream_check['resumed_to']} (its preparation includes "
            f"re-reading the stream up to where it stopped). Largest difference between the two runs' final "
            f"evaluations: {stream_check['max_metric_difference']:.2e} ({stream_check['largest']}).",
        ]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, out / "scale.png")
    return 0


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for (version, cache), style in (
        ((v, c), s) for v, s in (("baseline", "--"), ("sentmtl", "-")) for c in ("cold", "warm")
    ):
        chosen = sorted(
            (r for r in results if r["version"] == version and r["cache"] == cache), key=lambda r: r["rows"]
        )
        if not chosen:
            continue
        x = [r["rows"] for r in chosen]
        name = f"{version}, {cache} cache"
        axes[0].plot(x, [r["preparation_s"] for r in chosen], style, marker="o", label=name)
        axes[1].plot(x, [r["step_s"] for r in chosen], style, marker="o", label=name)
        axes[2].plot(x, [r["peak_anon_gb"] for r in chosen], style, marker="o", label=f"{name} (anon)")
        axes[2].plot(x, [r["peak_rss_gb"] for r in chosen], style, marker="x", alpha=0.5, label=f"{name} (RSS)")
    for ax, title in zip(axes, ("time to the first step (s)", "time per step (s)", "peak memory (GB)")):
        ax.set_xscale("log")
        ax.set_xlabel("rows")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
