#!/usr/bin/env python
"""A base-size encoder beside MiniLM: configs/multitask_sts.yaml and configs/retrieval_sts.yaml on all-mpnet-base-v2
(110M parameters), fully fine-tuned and with LoRA adapters, plus retrieval_sts with mined hard negatives, and one
seed of full and LoRA multitask_sts with batches padded to 16 tokens (`--pad_to_multiple_of`: the memory target).

    python benchmarks/base_size.py --data_dir ../shared/data/sentiment_labelled_sentences \\
        --stsb_dir ../shared/data/stsbenchmark --seeds 42 43 44

LoRA's LR and adapter dropout are chosen on seed 0 first, at r 16 (the `tune/` rows, not part of the comparison; a
rank probe, r 8, was measured after the choice was frozen and reports beside them). An mpnet run costs about five MiniLM runs on a 2-core CPU (~30 min for multitask_sts here), so every (scenario, seed)
writes its `result.json` into --runs_dir as soon as it finishes, and a run with one is skipped: stop and continue at
will. A run also saves a checkpoint every `SAVE_STEPS` steps and resumes from the newest one (`--resume_from_checkpoint
auto`, exact), so a sweep killed mid-run loses at most those steps. The run folders stay on the machine that ran them
(GBs of models and checkpoints); what outlives it is --output_dir, rewritten after every finished run: its
`summary.json` keeps each finished run's results with its seed, and a run recorded there is skipped too, so a fresh
checkout continues the sweep where the committed summary ends (a run in progress starts again). `--only` runs a
subset of the scenarios (the table shows every finished run).

Both run files are used as they are, except what mpnet's width changes: the projection starts as the identity, so
`embedding_size` is mpnet's 768, and retrieval_sts's Matryoshka sizes become 768 / 512 / 256 / 128 / 64 (the
MiniLM file's 384 … 32 scaled by two). Each row reports Task A accuracy, Task B ROC-AUC, STS-B dev Spearman (the run's
own evaluation), retrieval on STS-B dev with and without distractors (measured as benchmarks/retrieval.py measures
it), trainable parameters, peak anonymous memory of the training process (RssAnon sampled every 0.2 s, as
benchmarks/scale.py measures it) over the whole run and over its training phase (`PHASES`), seconds per training step and the saved folder's size. Writes `base_size.md`,
`summary.json` and `base_size.png` to --output_dir.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import procmem  # noqa: E402
import retrieval  # noqa: E402  (its retrieval sets and measurement, so the rows compare with its table)
import train_memory  # noqa: E402

MPNET = {"embedding_size": 768}
MPNET_MATRYOSHKA = {"matryoshka_dims": [768, 512, 256, 128, 64]}
# LoRA's encoder LR and adapter dropout (at r 16) are chosen on seed 0, which no table reports: each setting trains
# multitask_sts once ("tune/..." scenarios), and the one with the highest Task A accuracy + STS-B dev (both × 100) is
# what the lora/ scenarios run (`lora_flags`). alpha is 2 × r (--lora_alpha's default); the projection keeps the
# encoder's fine-tuning LR (--learning_rate 5e-5: it starts as the identity), the adapters take
# --backbone_learning_rate. The dropout-free point came after `--memory_steps`: dropout on the adapters' input keeps
# one more copy of every adapted layer's input, 0.25 GB of mpnet's live step peak and ~1.5x the step time here.
LORA_GRID = {
    "lora_r16_lr2e-4": ["--lora_r", "16", "--backbone_learning_rate", "2e-4"],
    "lora_r16_lr5e-4": ["--lora_r", "16", "--backbone_learning_rate", "5e-4"],
    "lora_r16_lr2e-4_dropout0": ["--lora_r", "16", "--backbone_learning_rate", "2e-4", "--lora_dropout", "0"],
}
# The rank beside the chosen point, measured after the choice was frozen (lora_chosen.json, session 21): a tune/ row
# on seed 0 that reports, outside `lora_flags`' choice, so the lora/ rows keep the flags they ran with.
LORA_RANK_PROBE = {
    "lora_r8_lr2e-4_dropout0": ["--lora_r", "8", "--backbone_learning_rate", "2e-4", "--lora_dropout", "0"],
}
TUNE_SEED = 0
# `--memory_steps`' variants (flags added to multitask_sts on mpnet). LoRA at r 16 (the LR does not change what a
# step holds); "_pad16": batches padded to a multiple of 16 tokens (--pad_to_multiple_of), fewer distinct shapes for
# the CPU's per-shape kernels and the heap.
_LORA_R16 = ["--lora_r", "16", "--backbone_learning_rate", "2e-4"]
_PAD16 = ["--pad_to_multiple_of", "16"]
# "_ckpt": activation checkpointing (each layer recomputed in backward; MPNet's layers through sentmtl's switch), which
# leaves a step's peak mostly weights and optimizer state, the part LoRA shrinks.
_CKPT = ["--activation_checkpointing", "true"]
MEMORY_VARIANTS = {
    "full": [],
    "lora_dropout_0.1": [*_LORA_R16, "--lora_dropout", "0.1"],
    "lora_dropout_0": [*_LORA_R16, "--lora_dropout", "0"],
    "full_pad16": _PAD16,
    "lora_dropout_0_pad16": [*_LORA_R16, "--lora_dropout", "0", *_PAD16],
    "full_pad16_ckpt": [*_PAD16, *_CKPT],
    "lora_dropout_0_pad16_ckpt": [*_LORA_R16, "--lora_dropout", "0", *_PAD16, *_CKPT],
}
# Mined negatives for the contrastive task (sentence-transformers' defaults for a first try: the top candidates
# below the positive's own score; the miner is the run's starting model).
MINING = {"hard_negatives": {"num_negatives": 1, "range_max": 50, "relative_margin": 0.05, "sampling_strategy": "top"}}
LORA = "<lora>"  # in a scenario's flags: LoRA's chosen flags (`lora_flags`)
SCENARIOS = {  # name → (run file, run-file edits, extra flags)
    "full/multitask_sts": ("configs/multitask_sts.yaml", MPNET, []),
    **{f"tune/{name}": ("configs/multitask_sts.yaml", MPNET, flags) for name, flags in LORA_GRID.items()},
    "lora/multitask_sts": ("configs/multitask_sts.yaml", MPNET, [LORA]),
    "full/retrieval_sts": ("configs/retrieval_sts.yaml", {**MPNET, **MPNET_MATRYOSHKA}, []),
    "lora/retrieval_sts": ("configs/retrieval_sts.yaml", {**MPNET, **MPNET_MATRYOSHKA}, [LORA]),
    "full/retrieval_sts_mined": ("configs/retrieval_sts.yaml", {**MPNET, **MPNET_MATRYOSHKA, "mine": MINING}, []),
    # The memory target over whole runs with batches padded to 16 tokens (results/README: the padding probe).
    "full/multitask_sts_pad16": ("configs/multitask_sts.yaml", MPNET, _PAD16),
    "lora/multitask_sts_pad16": ("configs/multitask_sts.yaml", MPNET, [LORA, *_PAD16]),
    # ... and with activation checkpointing, both sides.
    "full/multitask_sts_pad16_ckpt": ("configs/multitask_sts.yaml", MPNET, [*_PAD16, *_CKPT]),
    "lora/multitask_sts_pad16_ckpt": ("configs/multitask_sts.yaml", MPNET, [LORA, *_PAD16, *_CKPT]),
    # Last, so a default sweep trains the comparison first.
    **{f"tune/{name}": ("configs/multitask_sts.yaml", MPNET, flags) for name, flags in LORA_RANK_PROBE.items()},
}
# Seeds per scenario beyond which a scenario is not run: the mined row and the padded pair without checkpointing are
# one seed each; the checkpointed pair, on which the memory target rests, runs every seed (42-44).
MAX_SEEDS = {
    "full/retrieval_sts_mined": 1,
    **{f"{kind}/multitask_sts_pad16": 1 for kind in ("full", "lora")},
}
# A run outlives a session on this CPU (1,510 steps at 2-7 s): a checkpoint every 100 steps (a few seconds to write
# mpnet's weights and Adam moments; the newest kept) bounds what a killed sweep loses.
SAVE_STEPS = 100


def recorded(output_dir) -> dict:
    """The finished runs kept in --output_dir/summary.json, by scenario and seed ({} when there is none)."""
    path = Path(output_dir) / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not JSON ({error}); restore it from git, or move it away to start afresh."
        ) from None
    found = {}
    for scenario, results in summary.items():
        for values in results:
            if not isinstance(values, dict) or not isinstance(values.get("seed"), int):
                raise ValueError(
                    f"{path}: a {scenario} result names no seed (an object with an integer under 'seed'); add it, "
                    "or move the file away to start the sweep afresh."
                )
            if values["seed"] in found.get(scenario, {}):
                raise ValueError(f"{path}: {scenario} holds seed {values['seed']} twice; keep one of the two results.")
            found.setdefault(scenario, {})[values["seed"]] = values
    return found


def finished(scenario: str, seed: int, args) -> dict | None:
    """A run's results: its result.json in --runs_dir, else its record in --output_dir's summary, else None."""
    result = Path(args.runs_dir) / scenario / f"seed{seed}" / "result.json"
    if result.is_file():
        return {**json.loads(result.read_text()), "seed": seed}
    return recorded(args.output_dir).get(scenario, {}).get(seed)


def lora_flags(args) -> list[str]:
    """The LoRA flags chosen on seed 0 (`LORA_GRID`): a ValueError until every grid point has finished. The first
    lora/ run freezes the choice (--output_dir's `lora_chosen.json`, committed with the summary), so a grid point
    added later cannot mix settings within a row or resume a checkpoint under other flags; to choose again, delete
    that file and the lora/ results (their run folders and their entries in the summary)."""
    chosen = Path(args.output_dir) / "lora_chosen.json"
    if chosen.is_file():
        return json.loads(chosen.read_text())["flags"]
    scores = {}
    for name in LORA_GRID:
        values = finished(f"tune/{name}", TUNE_SEED, args)
        if values is None:
            raise ValueError(f"LoRA is not chosen yet: tune/{name} seed {TUNE_SEED} has not finished (run it first).")
        scores[name] = 100 * (values["eval_classification_accuracy"] + values["eval_stsb_spearman"])
    name = max(scores, key=scores.get)
    chosen.parent.mkdir(parents=True, exist_ok=True)
    chosen.write_text(json.dumps({"setting": name, "flags": LORA_GRID[name], "scores": scores}, indent=2))
    return list(LORA_GRID[name])


COLUMNS = {  # column → (key, scale, digits)
    "Task A %": ("eval_classification_accuracy", 100, 1),
    "Task B AUC": ("eval_sentiment_roc_auc", 1, 3),
    "STS-B dev": ("eval_stsb_spearman", 100, 1),  # the run reports it on 0–1
    "R@1": ("recall@1", 1, 1),
    "MRR@10": ("mrr@10", 1, 1),
    "R@1 +distr.": ("distractors_recall@1", 1, 1),
    "MRR@10 +distr.": ("distractors_mrr@10", 1, 1),
    "trainable params": ("trainable_parameters", 1, 0),
    "peak anon GB": ("peak_anon_gb", 1, 2),
    "peak anon GB, training": ("peak_anon_training_gb", 1, 2),
    "processes": ("processes", 1, 0),
    "s/step": ("step_s", 1, 2),
    "saved MB": ("saved_mb", 1, 0),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder.")
    parser.add_argument("--stsb_dir", required=True, help="The STS Benchmark folder (sts-train.csv, sts-dev.csv).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="One run per seed and scenario.")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        default=list(SCENARIOS),
        help="Scenarios to run, in this order (else: all, tuning first). The table shows every finished run.",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="The base-size encoder's folder (default: all-mpnet-base-v2 built by benchmarks/base_encoder.py).",
    )
    parser.add_argument("--runs_dir", default="results/runs/base_size", help="Per-run folders (not committed).")
    parser.add_argument("--output_dir", default="results/base_size", help="Where the table, summary and plot go.")
    parser.add_argument(
        "--table_only", action="store_true", help="Train nothing: print the table of the runs already finished."
    )
    parser.add_argument(
        "--memory_steps",
        type=int,
        default=0,
        help="Train nothing to the end: compare the memory of --memory_steps training steps of --memory_variants on "
        "multitask_sts, under --memory_heaps (benchmarks/train_memory.py; written to --output_dir/--memory_name).",
    )
    parser.add_argument(
        "--memory_variants",
        nargs="+",
        choices=list(MEMORY_VARIANTS),
        default=list(MEMORY_VARIANTS)[:3],
        help="With --memory_steps: the variants to compare, the first the baseline (default: full fine-tuning and LoRA "
        "r 16 with adapter dropout 0.1 and 0).",
    )
    parser.add_argument(
        "--memory_heaps",
        nargs="+",
        choices=list(train_memory.HEAPS),
        default=list(train_memory.HEAPS),
        help="With --memory_steps: glibc's default heap (the process peak the table reports) and/or large blocks "
        "mapped on their own (the live tensors).",
    )
    parser.add_argument(
        "--memory_name",
        default=None,
        help="With --memory_steps: the folder under --output_dir it writes (default 'memory', which holds the default "
        "comparison: other --memory_variants or --memory_heaps must name their own).",
    )
    parser.add_argument(
        "--measure", default=None, help="(internal) Print the retrieval measurement of this model folder as JSON."
    )
    return parser.parse_args(argv)


def run_file(scenario: str, args, out: Path) -> Path:
    """The scenario's run file: the config with mpnet's edits (and the STS-B folder the caller gave)."""
    config, edits, _ = SCENARIOS[scenario]
    values = yaml.safe_load((REPO_ROOT / config).read_text())
    edits = dict(edits)
    mine = edits.pop("mine", None)
    values.update(edits)
    values["sts_eval_file"] = str(Path(args.stsb_dir).resolve() / "sts-dev.csv")
    for task in values["tasks"]:
        for key in ("data", "distractors"):
            if isinstance(task.get(key), dict) and "stsb" in task[key]:
                task[key] = {"stsb": str(Path(args.stsb_dir).resolve())}
        if mine and task["type"] == "contrastive":
            task.update(mine)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


# A run's phases, told apart by the first line of each in its log: preparation (loading, teacher vectors,
# tokenising), training (from the optimizer's table, logged as the Trainer builds it, to the train_runtime line), and
# after (the final evaluation and saving). The LoRA target is memory "in training".
PHASES = {"preparation": None, "training": "Optimizer parameter groups:", "after": "'train_runtime'"}


def train(command: list[str], log: Path, peaks: Path) -> dict:
    """Run `command`; sample its RssAnon every 0.2 s; return the peaks in GB: `peak_anon_gb` over the whole run and
    `peak_anon_training_gb` over its training phase (`PHASES`; None if no process got there). Raises with the log's
    tail if the run fails.

    A run may take several processes (killed, then resumed from its checkpoint): each appends its peaks by phase to
    `peaks` (rewritten every few seconds, so a killed process's peaks so far are kept) and the run's are the highest.
    """
    earlier = json.loads(peaks.read_text()) if peaks.is_file() else []
    names, markers = list(PHASES), list(PHASES.values())
    phase, seen, peak, written = 0, "", dict.fromkeys(PHASES, 0), time.monotonic()
    with open(log, "a") as handle:  # a file, not a pipe: progress output would fill a pipe and block the run
        offset = handle.tell()  # this process's lines only: an earlier one's are above
        # unbuffered: transformers prints the train_runtime line with a bare print(), which a file would otherwise
        # hold until the process exits, and the final evaluation would count as training
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            with open(log, errors="replace") as reader:
                reader.seek(offset)
                while process.poll() is None:
                    # the new lines, with a marker's length of the old ones: a marker may straddle two reads
                    seen = seen[-64:] + reader.read()
                    while phase + 1 < len(names) and markers[phase + 1] in seen:
                        phase += 1
                        seen = seen[seen.index(markers[phase]) :]
                    try:
                        anon = procmem.memory_bytes(process.pid)["RssAnon"]
                        peak[names[phase]] = max(peak[names[phase]], anon)
                    except OSError:  # starting or gone
                        pass
                    if time.monotonic() - written > 5:
                        peaks.write_text(json.dumps([*earlier, _gb(peak)]))
                        written = time.monotonic()
                    time.sleep(0.2)
        except BaseException:
            # The sweep stopped (Ctrl-C, SIGTERM: `main` turns it into SystemExit): the run saves a checkpoint after
            # its current step and stops, instead of training on alone beside a resumed sweep in the same folder.
            # SIGTERM, not SIGINT: a sweep started in the background by a shell (`nohup ... &`) hands its runs
            # SIGINT ignored, so a run still preparing (before training installs its handler) would not stop.
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=300)
                except BaseException:  # too slow, or the sweep stopped again while waiting: no run left behind
                    process.kill()
                    process.wait()
                    raise
            raise
    processes = [*earlier, _gb(peak)]
    peaks.write_text(json.dumps(processes))
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    # a process recorded by an older version of this script: one number, its whole-process peak
    processes = [p if isinstance(p, dict) else {"run": p} for p in processes]
    training = [p["training"] for p in processes if p.get("training")]
    # a run resumed in a new process starts with a fresh heap: its peak is not comparable to one process's
    return {
        "processes": len(processes),
        "peak_anon_gb": max((value for p in processes for value in p.values()), default=None),
        "peak_anon_training_gb": max(training) if training else None,
    }


def _gb(peak: dict) -> dict:
    return {name: value / 1e9 for name, value in peak.items() if value}


# A resumed run's step time comes from its last process only (transformers counts the steps of its own call, and a
# killed process reports none): fewer steps than this there, and the run reports no step time.
MIN_TIMED_STEPS = 50


def step_time(train_results: dict) -> dict:
    """`step_s` from the run's train_results.json (None when its last process trained under `MIN_TIMED_STEPS` steps:
    a run resumed near its end, or at its end, which trains none) and `timed_steps`."""
    steps = round(train_results["train_runtime"] * train_results["train_steps_per_second"])
    if steps < MIN_TIMED_STEPS:
        return {"step_s": None, "timed_steps": steps}
    return {"step_s": train_results["train_runtime"] / steps, "timed_steps": steps}


def folder_mb(folder: Path) -> float:
    """What the model folder holds (the files a user would push), checkpoints and logs left out."""
    skip = {"checkpoint", "runs", "onnx"}
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.split("-")[0] in skip for part in p.relative_to(folder).parts)
    ]
    return sum(p.stat().st_size for p in files) / 1e6


def run_one(scenario: str, seed: int, args, encoder: str) -> dict:
    out = Path(args.runs_dir) / scenario / f"seed{seed}"
    result = out / "result.json"
    values = finished(scenario, seed, args)
    if values is not None:
        if (out / "model").is_dir():  # measured again: cheap, and results of older versions of this script counted 0
            values["saved_mb"] = folder_mb(out / "model")
        return values
    if args.table_only:
        return {}
    model_dir = out / "model"
    # What the scenario adds to its run file (LoRA's chosen flags among them), kept in the result.
    extra = [flag for item in SCENARIOS[scenario][2] for flag in (lora_flags(args) if item == LORA else [item])]
    command = [
        sys.executable,
        "run_mtl.py",
        str(run_file(scenario, args, out)),
        "--model_name_or_path",
        encoder,
        "--data_dir",
        args.data_dir,
        "--seed",
        str(seed),
        "--output_dir",
        str(model_dir),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        str(SAVE_STEPS),
        "--save_total_limit",
        "1",
        "--resume_from_checkpoint",
        "auto",
        *extra,
    ]
    started = time.perf_counter()
    trained = out / "trained.json"  # training done: a measurement that failed is retried without training again
    if not trained.is_file() or not (model_dir / "eval_results.json").is_file():
        trained.write_text(json.dumps(train(command, out / "train.log", out / "peaks.json")))
    values = json.loads(trained.read_text())
    for name in ("eval_results.json", "train_results.json"):
        values.update(json.loads((model_dir / name).read_text()))
    values.update(step_time(values))
    values["flags"] = extra
    values["seed"] = seed
    values["saved_mb"] = folder_mb(model_dir)
    # Measured in a process of its own: this one imported sentmtl when the sweep began (hours before), and a model
    # loads with the code of the run that saved it.
    measured = subprocess.run(
        [sys.executable, __file__, "--measure", str(model_dir), "--data_dir", "-", "--stsb_dir", args.stsb_dir],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if measured.returncode != 0:
        raise RuntimeError(f"measuring {model_dir} failed:\n{measured.stderr[-3000:]}")
    values.update(json.loads(measured.stdout.strip().splitlines()[-1]))
    values["wall_s"] = time.perf_counter() - started
    result.write_text(json.dumps(values, indent=2))
    for checkpoint in model_dir.glob("checkpoint-*"):  # 1.3 GB each for mpnet; the result is written
        shutil.rmtree(checkpoint)
    print(f"  {scenario} seed {seed}: {values['wall_s']:.0f} s", flush=True)
    return values


def table(runs: dict, seeds: list[int]) -> str:
    lines = ["| scenario | n | " + " | ".join(COLUMNS) + " |", "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for scenario, results in runs.items():
        if scenario.startswith("tune/"):
            continue
        cells = []
        for column, (key, scale, digits) in COLUMNS.items():
            values = [r[key] for r in results if r.get(key) is not None]  # a run may lack one (not recorded)
            if column in ("trainable params",) and values:
                cells.append(f"{statistics.median(values):,.0f}")
            else:
                median = column in ("s/step", "peak anon GB", "peak anon GB, training", "processes", "saved MB")
                cells.append(retrieval.cell(values, scale, digits, median=median))
        lines.append(f"| {scenario} | {len(results)} | " + " | ".join(cells) + " |")
    tuned = [s for s in runs if s.startswith("tune/")]
    if tuned:
        lines += [
            "",
            f"LoRA's search on seed {TUNE_SEED} (not in the comparison; the highest Task A + STS-B of "
            f"{', '.join(LORA_GRID)} is used; {', '.join(LORA_RANK_PROBE)} measured the rank after the choice):",
            "",
        ]
        lines += ["| setting | Task A % | STS-B dev |", "| --- | ---: | ---: |"]
        for scenario in tuned:
            values = runs[scenario][0]
            lines.append(
                f"| {scenario.split('/')[1]} | {100 * values['eval_classification_accuracy']:.1f} | "
                f"{100 * values['eval_stsb_spearman']:.1f} |"
            )
    lines += [
        "",
        f"all-mpnet-base-v2; mean ± std over seeds ({', '.join(map(str, seeds)) or 'none yet'}; n per row); s/step, "
        "peak anonymous memory, processes and saved size: median. Peaks: over the whole run and over its training "
        "phase; a run resumed in new processes starts each with a fresh heap (`processes`), so its peak reads lower "
        "than one process's. R@1 / MRR@10 × 100 on STS-B dev (benchmarks/retrieval.py's sets).",
    ]
    return "\n".join(lines)


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [s for s, r in runs.items() if r and not s.startswith("tune/")]
    for axis, (label, key, scale) in zip(
        axes,
        [
            ("Task A accuracy %", "eval_classification_accuracy", 100),
            ("STS-B dev Spearman × 100", "eval_stsb_spearman", 100),
            ("peak anonymous memory (GB)", "peak_anon_gb", 1),
        ],
    ):
        means = [statistics.mean([r[key] * scale for r in runs[s] if r.get(key) is not None] or [0.0]) for s in names]
        axis.barh(names, means, color="tab:blue")
        axis.set_xlabel(label)
        if max(means) > 0:  # a column no run recorded stays empty
            axis.set_xlim(min(means) * 0.98 if key != "peak_anon_gb" else 0, max(means) * 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def memory_probe(args, encoder: str) -> dict:
    """The process peaks in the table barely tell LoRA from full fine-tuning (glibc's heap keeps what varied batch
    shapes free): the training steps' memory side by side, with the heap's holes and with the live tensors only.
    `MEMORY_VARIANTS` by name (by default full fine-tuning and LoRA r 16 with adapter dropout 0.1 and 0)."""
    if args.memory_steps < 2:
        raise SystemExit(f"--memory_steps {args.memory_steps}: give at least 2 (the last step is not timed).")
    default = args.memory_variants == list(MEMORY_VARIANTS)[:3] and args.memory_heaps == list(train_memory.HEAPS)
    if args.memory_name is None and not default:
        raise SystemExit(
            "--memory_variants / --memory_heaps other than the defaults: give --memory_name, a folder of their own "
            "(--output_dir's 'memory' holds the default comparison the docs cite)."
        )
    name = args.memory_name or "memory"
    out = (Path(args.runs_dir) / name).resolve()
    common = [str(run_file("full/multitask_sts", args, out)), "--model_name_or_path", encoder]
    common += ["--data_dir", str(Path(args.data_dir).resolve()), "--seed", "42"]
    variants = {name: [*common, *MEMORY_VARIANTS[name]] for name in args.memory_variants}
    steps = args.memory_steps
    return train_memory.compare(
        variants, steps, min(10, steps // 2), args.memory_heaps, out, Path(args.output_dir) / name
    )


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # through train()'s handler, which stops the run it started


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        embed, _ = retrieval.sentmtl_embedder(Path(args.measure))
        print(json.dumps(retrieval.measure(embed, args.stsb_dir, [768])))
        return 0
    encoder = args.encoder
    if encoder is None and not args.table_only:
        import base_encoder

        encoder = str(base_encoder.ensure_mpnet())
    if args.memory_steps:
        memory_probe(args, encoder)
        return 0

    if not args.table_only:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        for scenario in args.only:  # in the order given
            for seed in seeds_of(scenario, args):
                if finished(scenario, seed, args) is None:  # a recorded run is neither trained nor written again
                    run_one(scenario, seed, args, encoder)
                    write_outputs(args, encoder)  # each finished run reaches the summary at once
    write_outputs(args, encoder, verbose=True)
    return 0


def seeds_of(scenario: str, args) -> list[int]:
    """The seeds a scenario runs: --seeds, but tuning on `TUNE_SEED` only, and a scenario with a `MAX_SEEDS` limit
    counts the seeds it has already recorded first (a later call with other --seeds adds no run beyond the limit)."""
    if scenario.startswith("tune/"):
        return [TUNE_SEED]
    if scenario not in MAX_SEEDS:
        return list(args.seeds)
    done = sorted(recorded(args.output_dir).get(scenario, {}))
    return (done + [seed for seed in args.seeds if seed not in done])[: MAX_SEEDS[scenario]]


def write_outputs(args, encoder, verbose=False) -> bool:
    """The table, summary and plot of every finished run: those of --seeds and those the summary already holds (a
    call with fewer seeds drops none). False when nothing has finished yet."""
    finished_only = argparse.Namespace(**{**vars(args), "table_only": True})
    kept = recorded(args.output_dir)
    runs = {}
    # a scenario the summary holds that this version no longer names (renamed, or a grid point removed) is kept
    for scenario in [*SCENARIOS, *(s for s in kept if s not in SCENARIOS)]:
        seeds = sorted(set(seeds_of(scenario, args) if scenario in SCENARIOS else []) | set(kept.get(scenario, {})))
        results = [r for seed in seeds if (r := run_one(scenario, seed, finished_only, encoder))]
        if results:
            runs[scenario] = results
    if not runs:
        print("no finished runs yet")
        return False
    seeds = sorted({r["seed"] for s, results in runs.items() if not s.startswith("tune/") for r in results})
    text = table(runs, seeds)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "base_size.md").write_text(text + "\n")
    (output_dir / "summary.json").write_text(json.dumps(runs, indent=2))
    plot(runs, output_dir / "base_size.png")
    if verbose:
        print(text)
        print(f"\nwrote {output_dir / 'base_size.md'}, summary.json and base_size.png")
    return True


if __name__ == "__main__":
    sys.exit(main())
