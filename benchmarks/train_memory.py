#!/usr/bin/env python
"""Memory of training steps: resident anonymous memory (RssAnon) per training step of `run_mtl.py` runs, side by
side, each run in its own process, under glibc's default heap and with large blocks mapped on their own.

    python benchmarks/train_memory.py --steps 40 \\
        --variant "full=configs/quick.yaml --data_dir ../shared/data/sentiment_labelled_sentences" \\
        --variant "lora=configs/quick.yaml --data_dir ../shared/data/sentiment_labelled_sentences --lora_r 16"

Why two heaps: a run's process peak (what benchmarks/scale.py and base_size.py report) on glibc's default heap is
mostly freed memory the heap keeps. Batches of ever-different lengths leave holes that later tensors do not fit, so
resident memory climbs within the `ReleaseMemoryCallback` interval by more than a step's live tensors, and the same
for any set of trainable weights. With `MALLOC_MMAP_THRESHOLD_=65536` every block over 64 KiB is mapped on its own
and unmapped when freed, so resident memory follows the live tensors (steps run slower: freed pages fault back in;
the `s/step` column shows by how much). Each variant runs `--steps` steps and stops at the end of training (the
final evaluation and saving are not measured); `peak` is over every step, `peak after warm-up` over steps from
`--warmup` on (the first steps also allocate the optimizer's state and warm kernels' caches).
Writes `train_memory.json`, `train_memory.md` and `train_memory.png` to --output_dir.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import procmem

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAPS = {"default": {}, "mapped": {"MALLOC_MMAP_THRESHOLD_": "65536"}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='NAME="run_mtl.py arguments" (a run file first, if any); give it once per run to compare, baseline first.',
    )
    parser.add_argument("--steps", type=int, default=40, help="Training steps per run (--max_steps).")
    parser.add_argument("--warmup", type=int, default=10, help="Steps left out of the 'after warm-up' peak.")
    parser.add_argument(
        "--heaps", nargs="+", choices=list(HEAPS), default=list(HEAPS), help="The glibc heap settings to run under."
    )
    parser.add_argument("--work_dir", default="/tmp/sentmtl_train_memory", help="The runs' output folders.")
    parser.add_argument("--output_dir", default="results/train_memory", help="Where the table, JSON and plot go.")
    parser.add_argument("--child", default=None, help="(internal) Run one variant and write its record to this file.")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="(internal) The child's run_mtl.py arguments.")
    return parser.parse_args(argv)


def _rss_anon_gb() -> float:
    return procmem.memory_bytes()["RssAnon"] / 1e9


def child(record_path: str, run_arguments: list[str]) -> None:
    """Train with `run_arguments`, sampling RssAnon every 20 ms, tagged with the step under way; at the end of
    training write {"setup": peak before the first step, "steps": [[step, min GB, max GB, seconds], ...]} and end the
    process (the final evaluation is not what is measured)."""
    sys.path.insert(0, str(REPO_ROOT))  # this checkout's sentmtl, installed or not
    from transformers import TrainerCallback

    from sentmtl.training.run import parse_args as parse_run_args
    from sentmtl.training.run import run

    state = {"step": None, "started": None}
    setup, steps, seconds = [0.0], {}, {}

    def sample():
        while True:
            gb, step = _rss_anon_gb(), state["step"]
            if step is None:
                setup[0] = max(setup[0], gb)
            else:
                low, high = steps.get(step, (gb, gb))
                steps[step] = (min(low, gb), max(high, gb))
            time.sleep(0.02)

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state_, control, **kwargs):
            now, gb = time.monotonic(), _rss_anon_gb()
            if state["step"] is not None:  # a step's time runs to the next one's begin (logging included)
                seconds[state["step"]] = now - state["started"]
                low, high = steps.get(state["step"], (gb, gb))
                steps[state["step"]] = (min(low, gb), max(high, gb))
            state.update(step=state_.global_step, started=now)
            steps.setdefault(state_.global_step, (gb, gb))  # a step shorter than the sampling interval has one too

        def on_train_end(self, args, state_, control, **kwargs):
            rows = [[s, *steps[s], seconds[s]] for s in sorted(seconds) if s in steps]
            heap = {key: os.environ.get(key) for key in HEAPS["mapped"]}  # what this process's glibc was given
            Path(record_path).write_text(json.dumps({"setup": setup[0], "steps": rows, "heap": heap}))
            os._exit(0)

    threading.Thread(target=sample, daemon=True).start()
    run(*parse_run_args(run_arguments), callbacks=[Steps()])
    raise RuntimeError("training ended without on_train_end")


def heap_env(heap: str, environ) -> dict:
    """The child's environment: glibc's tunables of `heap` only (a `MALLOC_*` variable of this shell would blur the
    default heap)."""
    return {**{k: v for k, v in environ.items() if not k.startswith("MALLOC_")}, **HEAPS[heap]}


def measure(name: str, run_arguments: list[str], steps: int, heap: str, work_dir: Path) -> dict:
    """One variant under one heap setting, in a process of its own: its per-step record (see `child`)."""
    out = Path(work_dir).resolve() / f"{name}_{heap}"  # the child runs in the repository root
    out.mkdir(parents=True, exist_ok=True)
    record = out / "record.json"
    record.unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "--child",
        str(record),
        "--",
        *run_arguments,
        "--output_dir",
        str(out / "model"),
        "--overwrite_output_dir",
        "--max_steps",
        str(steps),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    ]
    env = heap_env(heap, os.environ)
    with open(out / "run.log", "w") as log:
        process = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if process.returncode != 0 or not record.is_file():
        raise RuntimeError(
            f"{name} ({heap} heap) failed ({process.returncode}):\n{(out / 'run.log').read_text()[-3000:]}"
        )
    return json.loads(record.read_text())


def summary(record: dict, warmup: int) -> dict:
    """Peaks over all steps and after warm-up, the lowest resident memory at any step, the mean step time."""
    rows = record["steps"]
    later = [r for r in rows if r[0] >= warmup] or rows
    return {
        "setup_gb": record["setup"],
        "peak_gb": max(r[2] for r in rows),
        "peak_after_warmup_gb": max(r[2] for r in later),
        "floor_after_warmup_gb": min(r[1] for r in later),
        # the mean: a round-robin run alternates batches of different work, and a median would pick one kind
        "step_s": statistics.mean(r[3] for r in later),
        "steps": len(rows),
    }


def table(results: dict) -> str:
    """One row per (variant, heap); the ratio column against the first variant under the same heap."""
    lines = [
        "| variant | heap | peak GB | peak after warm-up GB | vs first | floor GB | s/step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = list(results)
    heaps = list(next(iter(results.values())))
    for heap in heaps:
        base = results[names[0]][heap]["peak_after_warmup_gb"]
        for name in names:
            s = results[name][heap]
            lines.append(
                f"| {name} | {heap} | {s['peak_gb']:.2f} | {s['peak_after_warmup_gb']:.2f} | "
                f"{s['peak_after_warmup_gb'] / base - 1:+.0%} | {s['floor_after_warmup_gb']:.2f} | {s['step_s']:.2f} |"
            )
    return "\n".join(lines)


def plot(records: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heaps = list(next(iter(records.values())))
    fig, axes = plt.subplots(1, len(heaps), figsize=(6 * len(heaps), 4), squeeze=False)
    for axis, heap in zip(axes[0], heaps):
        for name, by_heap in records.items():
            rows = by_heap[heap]["steps"]
            axis.plot([r[0] for r in rows], [r[2] for r in rows], label=f"{name} (max)")
            axis.plot([r[0] for r in rows], [r[1] for r in rows], linestyle=":", label=f"{name} (min)")
        axis.set_title(f"{heap} heap")
        axis.set_xlabel("training step")
        axis.set_ylabel("RssAnon within the step (GB)")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_variants(items: list[str]) -> dict[str, list[str]]:
    variants = {}
    for item in items:
        name, sep, arguments = item.partition("=")
        if not sep or not name:
            raise SystemExit(f'--variant {item!r}: give NAME="run_mtl.py arguments", e.g. full="configs/quick.yaml"')
        if name in variants:
            raise SystemExit(f"--variant {name}: given twice")
        variants[name] = shlex.split(arguments)
    if not variants:
        raise SystemExit('give at least one --variant NAME="run_mtl.py arguments"')
    return variants


def compare(variants: dict[str, list[str]], steps: int, warmup: int, heaps, work_dir, output_dir) -> dict:
    """Every variant under every heap, one process each; writes the JSON, table and plot. Returns the summaries."""
    records = {
        name: {heap: measure(name, arguments, steps, heap, Path(work_dir)) for heap in heaps}
        for name, arguments in variants.items()
    }
    results = {name: {heap: summary(r, warmup) for heap, r in by_heap.items()} for name, by_heap in records.items()}
    text = table(results)
    print(text)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "train_memory.md").write_text(text + "\n")
    (output_dir / "train_memory.json").write_text(json.dumps({"summary": results, "records": records}, indent=2))
    plot(records, output_dir / "train_memory.png")
    print(f"\nwrote {output_dir / 'train_memory.md'}, train_memory.json and train_memory.png")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        child(args.child, rest)
        return 0
    if args.warmup >= args.steps:
        raise SystemExit(f"--warmup {args.warmup} must be below --steps {args.steps}")
    compare(parse_variants(args.variant), args.steps, args.warmup, args.heaps, args.work_dir, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
