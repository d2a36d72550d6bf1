#!/usr/bin/env python
"""The GPU paths in one prepared run: a realistic speed workload against the plain baselines, accuracy beside it,
CUDA tests, mixed-precision training.

A GPU machine lent for a few minutes has no network, no `datasets`, and room for 64 MiB of working tree; the bundled
encoder's fp32 weights (90 MB) and the corpus in ../shared do not travel. So the work is in three steps:

    python benchmarks/gpu_check.py --prepare      # here: .gpu/ (bf16 encoder copy, corpus, STS-B dev) and .whl/
    python benchmarks/gpu_check.py --dry-run      # here, on the CPU: every item, tiny sizes, no CUDA
    # there, carrying .gpu and .whl (both git-ignored):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --output_dir $OUT/gpu

The run measures ITEMS below in priority order, each written to `gpu_check.json` as it finishes (a run cut short
by the device's time limit still leaves every finished result) with its `summary:` lines printed at once. The
whole run keeps to --budget_s (330 s): an item whose estimated GPU time no longer fits is skipped with a note, and
an item still running at the end of the budget is stopped. The items:

- `train_*`: steady-state training, batch 64, sentmtl's default path (run_mtl.py's `run()`) against the plain
  Trainer recipe (AutoModelForSequenceClassification, random batches, dynamic padding) at matched precision (fp32,
  or bf16 autocast for both); each path in its own process: WARM steps, then PROFILE steps under the profiler
  (CUDA kernels, GPU busy time, host syncs per step), then WINDOW timed steps (synchronised). End to end (the
  whole train() call less the profiled steps) is reported beside it, not compared. On MiniLM (the travelled
  all-MiniLM-L6-v2) and on a BERT-base stand-in: `BertConfig()`'s defaults (768 wide, 12 layers, 110M parameters:
  bge-base's and e5-base's architecture) randomly initialised (seed 0) with MiniLM's tokenizer (the same 30,522
  WordPiece vocabulary). A base model's weights do not fit what travels, so the stand-in gives speed only.
  `train_minilm_fp32_compiled`: sentmtl with `--torch_compile` (inductor, dynamic shapes) against the same eager
  plain Trainer: eager, sentmtl still launches ~1.1× the plain recipe's kernels (benchmarks/overhead.py), so a
  1.3× steady-state speed-up over it can only come from fused, compiled steps.
- `embed_*`: `sentmtl.encode` at its default precision and each other one it offers (bf16 autocast, bf16 and fp16
  weights), and fp16 weights unpadded, against `SentenceTransformer.encode` in fp32, fp16, and fp16 unpadded (the
  unpadded paths run flash attention's variable-length kernels: only where flash_attn imports; else a row says why
  not), on the corpus's 3,000 sentences, batch 64, one warm-up and interleaved passes (median). Cosines: each path
  against its own library's fp32 embeddings.
- `accuracy_minilm`: run_mtl.py's defaults on seed 0 with STS-B dev: Task A accuracy and STS-B dev Spearman beside
  the CPU run of the same seed (--cpu_reference).
- `gpu_tests` (`pytest -m gpu`, tests/e2e/test_gpu.py), `train_default_bf16` / `_fp16` (the default configuration
  end to end in each autocast precision), `speed_py` (benchmarks/speed.py --device cuda): the earlier check, last.

The encoder that travels is all-MiniLM-L6-v2 rounded to bf16 and widened back to fp32 there (max weight error
2^-9 relative): its accuracy numbers are those of that copy, not of the sha256-checked original.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO_ROOT / ".whl"
# What the device image lacks (datasets and its dill / multiprocess), and the versions this project is tested with
# where the image's differ (transformers, huggingface_hub and its HTTP client, sentence-transformers).
WHEELS = (
    "transformers",
    "huggingface_hub",
    "datasets",
    "dill",
    "multiprocess",
    "sentence-transformers",
    "httpx2",
    "httpcore2",
    "truststore",
)
BF16_WEIGHTS = "model.bf16.safetensors"
# 5.5 minutes: the device lends 15, of which a start takes 1–2, the transfer and the wheels' install about 1, and
# what is left must hold a rerun of the first items if the first attempt breaks.
BUDGET_S = 330.0
DRY_RUN_BUDGET_S = 900.0  # the CPU's tiny run, bounded by the CI test's own limit rather than by GPU estimates
# The CPU run of the same seed (results/README.md, "0.3.0.dev0: the renovation rerun", task2/default seed 0: a
# 2-CPU AMX machine where `auto` picks bf16): Task A accuracy % and STS-B dev Spearman × 100.
CPU_REFERENCE = (92.82, 85.95)
ACCURACY_SEED = 0
# The dry run's stand-in: BERT's shape at a size the CPU trains in seconds.
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="Write .gpu/ and .whl/ for the device machine, then stop.")
    mode.add_argument(
        "--dry-run", action="store_true", help="Every item on the CPU with tiny sizes (no CUDA needed; CI runs it)."
    )
    parser.add_argument("--output_dir", default="results/gpu", help="Where gpu_check.json and speed.py's files go.")
    parser.add_argument("--data_dir", default=None, help="The corpus (default: the prepared copy).")
    parser.add_argument(
        "--prepared_dir",
        default=str(REPO_ROOT / ".gpu"),
        help="Where --prepare writes the encoder, corpus and STS-B dev copies, and where the run reads them.",
    )
    parser.add_argument("--skip_wheels", action="store_true", help="--prepare without the wheels (for the dry run).")
    parser.add_argument(
        "--budget_s",
        type=float,
        default=None,
        help=f"Wall-time budget of the whole run, in seconds (default {BUDGET_S:.0f}; {DRY_RUN_BUDGET_S:.0f} with "
        "--dry-run). An item starts only if its estimated GPU time fits in what is left (on the dry run: if any is "
        "left), and is stopped when the budget runs out; skipped items are listed with a note.",
    )
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="ITEM", help="Run these items only (in priority order)."
    )
    parser.add_argument("--skip", nargs="+", default=(), metavar="ITEM", help="Leave these items out.")
    parser.add_argument("--skip_tests", action="store_true", help="Leave out gpu_tests (as --skip gpu_tests).")
    parser.add_argument("--skip_speed", action="store_true", help="Leave out speed_py (as --skip speed_py).")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Batch size of the train_* and embed_* items (default 64; 8 dry)."
    )
    parser.add_argument(
        "--steady_steps",
        nargs=3,
        type=int,
        default=None,
        metavar=("WARM", "PROFILE", "WINDOW"),
        help="train_* items: untimed warm-up steps, then profiled steps, then timed steps (default 40 5 150 on a "
        "GPU: 40 steps is about one epoch of batch-64 batches, so every batch shape has been seen; 1 1 2 dry).",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="embed_* items: timed passes per path after one warm-up, interleaved (default 5; 1 dry).",
    )
    parser.add_argument(
        "--cpu_reference",
        nargs=2,
        type=float,
        default=CPU_REFERENCE,
        metavar=("TASK_A", "STSB"),
        help="The CPU run's Task A accuracy %% and STS-B dev Spearman × 100 on seed 0, for accuracy_minilm "
        "(default: results/README.md's 0.3.0.dev0 task2/default seed 0).",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement in a child process
    parser.add_argument("--worker_args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [item.name for item in ITEMS]
    for given in (*(args.only or ()), *args.skip):
        if given not in names:
            parser.error(f"no item {given!r}; the items are {', '.join(names)}")
    args.skip = {*args.skip, *["gpu_tests"] * args.skip_tests, *["speed_py"] * args.skip_speed}
    return args


# -- preparing, here --------------------------------------------------------------------------------------------------


def prepare(prepared: Path, wheels: bool = True) -> None:
    """The bundled encoder as bf16 (half the bytes), the corpus files, STS-B dev, and wheels for Python 3.12 on
    x86-64."""
    import torch
    from safetensors.torch import load_file, save_file

    from sentmtl.model.encoders import bundled_encoder_path

    source = bundled_encoder_path()
    encoder = prepared / "encoder"
    shutil.rmtree(prepared, ignore_errors=True)
    encoder.mkdir(parents=True)
    weights = load_file(source / "model.safetensors")
    save_file({name: tensor.to(torch.bfloat16) for name, tensor in weights.items()}, encoder / BF16_WEIGHTS)
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
    ):
        shutil.copy(source / name, encoder / name)
    shutil.copytree(source / "1_Pooling", encoder / "1_Pooling")
    shared = REPO_ROOT.parent / "shared" / "data"
    (prepared / "corpus").mkdir()
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        shutil.copy(shared / "sentiment_labelled_sentences" / name, prepared / "corpus" / name)
    (prepared / "stsb").mkdir()
    shutil.copy(shared / "stsbenchmark" / "sts-dev.csv", prepared / "stsb" / "sts-dev.csv")  # 1,500 pairs, 0.25 MB
    if not wheels:
        print(f"prepared {prepared} (no wheels)")
        return

    from importlib.metadata import version

    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [
        arg
        for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
        for arg in ("--platform", tag)
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(WHEELHOUSE),
            *pins,
        ],
        check=True,
    )
    size = sum(f.stat().st_size for folder in (prepared, WHEELHOUSE) for f in folder.rglob("*") if f.is_file())
    print(f"prepared {prepared.name}/ and {WHEELHOUSE.name}/ ({size / 2**20:.1f} MiB; carry both): {', '.join(pins)}")


def encoder_folder(prepared: Path) -> Path:
    """The travelled encoder with fp32 weights (widened from the bf16 copy once), as any encoder folder."""
    folder = prepared / "encoder"
    fp32 = folder / "model.safetensors"
    if not fp32.is_file():
        import torch
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / BF16_WEIGHTS)
        save_file({name: tensor.to(torch.float32) for name, tensor in weights.items()}, fp32)
    return folder


def bert_base_standin(tokenizer_source: Path, folder: Path, sizes: dict | None = None) -> Path:
    """A plain encoder folder both training paths and both embedding libraries load: `BertConfig()`'s defaults (or
    `sizes` over them) with random weights (seed 0, BERT's own initialisation) and `tokenizer_source`'s tokenizer,
    the embedding table sized to its vocabulary (MiniLM's is BERT's uncased 30,522, so the shape is BERT-base's)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = BertConfig(vocab_size=len(tokenizer), **(sizes or {}))
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- measurements in child processes ----------------------------------------------------------------------------------


def _speed():
    """benchmarks/speed.py as a module: its training workers and child-process runner."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import speed

    return speed


def worker_embed(data_dir, encoder, device, batch_size, repeats, max_sentences=None):
    """`sentmtl.encode` at its default precision, each other one it offers and fp16 weights unpadded,
    `SentenceTransformer.encode` in fp32, fp16 and fp16 unpadded (the unpadded paths where flash_attn imports): one
    warm-up and `repeats` interleaved passes each (speed._timed_passes); cosines to each library's own fp32
    embeddings. A path that cannot run here is a row that says why."""
    import importlib.util
    import warnings
    from functools import partial

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    from sentence_transformers import SentenceTransformer

    import sentmtl
    from sentmtl.data.corpus import load_sentiment_corpus
    from sentmtl.serving.embed import PRECISIONS
    from sentmtl.serving.precision import fast_bf16_available

    speed = _speed()
    sentences = list(load_sentiment_corpus(data_dir)["sentence"])[:max_sentences]
    model, tokenizer = sentmtl.load_model_and_tokenizer(encoder)
    model.to(device)
    ours = partial(sentmtl.encode, model, tokenizer=tokenizer, batch_size=batch_size, show_progress_bar=False)
    default = "bf16" if fast_bf16_available(torch.device(device).type) else "fp32"
    paths = {"sentmtl_default": ours}
    precision = {"sentmtl_default": default}
    skipped = {}
    for p in PRECISIONS:
        if p in ("auto", default):
            continue
        if p == "fp16-weights" and not device.startswith("cuda"):
            skipped[f"sentmtl_{p}"] = "fp16 weights are for GPUs (encode refuses them on a CPU)"
            continue
        paths[f"sentmtl_{p}"], precision[f"sentmtl_{p}"] = partial(ours, precision=p), p
    if not device.startswith("cuda"):
        no_flash = "flash attention needs CUDA"
    elif importlib.util.find_spec("flash_attn") is None:
        no_flash = "flash_attn is not importable here (not in the device image, nor carried)"
    else:
        no_flash = None
    unpadded = partial(ours, precision="fp16-weights", unpadded=True)
    if no_flash is None:
        try:  # as for sentence-transformers below: a flash_attn that fails to load is a row that says so
            unpadded(sentences[:2])
        except (ImportError, ValueError, RuntimeError) as err:
            skipped["sentmtl_fp16-weights_unpadded"] = f"{type(err).__name__}: {str(err)[:200]}"
        else:
            paths["sentmtl_fp16-weights_unpadded"] = unpadded
            precision["sentmtl_fp16-weights_unpadded"] = "fp16-weights"
    else:
        skipped["sentmtl_fp16-weights_unpadded"] = no_flash
    st_kwargs = {"device": device, "model_kwargs": {"dtype": torch.float16}}
    st = {"st_fp32": SentenceTransformer(encoder, device=device), "st_fp16": SentenceTransformer(encoder, **st_kwargs)}
    if no_flash is not None:
        skipped["st_fp16_unpadded"] = no_flash
    else:
        flash = {**st_kwargs["model_kwargs"], "attn_implementation": "flash_attention_2"}
        try:  # an installed flash_attn built for another torch fails only here: a row that says so, not a failed item
            unpadded = SentenceTransformer(encoder, device=device, model_kwargs=flash)
        except (ImportError, ValueError, RuntimeError) as err:
            skipped["st_fp16_unpadded"] = f"flash_attention_2 did not load: {type(err).__name__}: {str(err)[:200]}"
        else:
            if unpadded[0].can_flatten_inputs:
                st["st_fp16_unpadded"] = unpadded
            else:
                skipped["st_fp16_unpadded"] = "sentence-transformers would not unpad this model (can_flatten_inputs)"
    for name, st_model in st.items():
        paths[name] = partial(st_model.encode, batch_size=batch_size, show_progress_bar=False)
        precision[name] = "fp16" if "fp16" in name else "fp32"
    times = speed._timed_passes(paths, sentences, repeats)
    references = {"sentmtl": ours(sentences, precision="fp32"), "st": paths["st_fp32"](sentences)}
    quality = {
        name: speed._cosines(np.asarray(encode(sentences), dtype=np.float32), references[name.split("_")[0]])
        for name, encode in paths.items()
        if name not in ("st_fp32",)
    }
    return {
        "n": len(sentences),
        "batch_size": batch_size,
        "times": times,
        "precision": {name: precision[name] for name in paths},
        "quality": quality,
        "skipped": skipped,
    }


WORKERS = {"embed": worker_embed}


# -- the items --------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every item reads: the run's arguments and sizes, where things are, and the budget's clock."""

    args: argparse.Namespace
    dry_run: bool
    device: str
    data_dir: str
    prepared: Path
    output_dir: Path
    scratch: Path  # big, throwaway files (the stand-in's 440 MB of weights, trained models): never under $OUT
    encoder: Path
    steady: tuple  # (warm, profile, window)
    batch_size: int
    repeats: int
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    _standin: Path | None = None

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def model(self, name: str) -> Path:
        """The encoder folder of `minilm` or `bert_base` (the stand-in, built on first use)."""
        if name == "minilm":
            return self.encoder
        if self._standin is None:
            self._standin = bert_base_standin(
                self.encoder, self.scratch / "bert_base", TINY_BERT if self.dry_run else None
            )
        return self._standin


class ItemFailed(Exception):
    """An item ran and failed: its result (with the error) is still recorded."""

    def __init__(self, result: dict):
        super().__init__(result.get("error", "failed"))
        self.result = result


@dataclass
class Item:
    name: str
    estimate_s: float  # GPU wall time, from the H100 / H200 runs (results/gpu/) and the arithmetic beside ITEMS
    run: Callable  # (Context, timeout) -> (result dict, summary lines)
    cuda_only: str | None = None  # why the dry run skips it


MODELS = {"minilm": "MiniLM", "bert_base": "BERT-base stand-in"}


def train_pair(model: str, precision: str, compiled: bool = False):
    """sentmtl's default training against the plain Trainer on `model` in `precision`, each in its own process.
    `compiled`: sentmtl with `--torch_compile` (inductor; aot_eager on the dry run, which checks the path, not the
    speed), the plain Trainer eager as in every row: the step that launches fewer, fused kernels, against the recipe
    users run. The compilation falls in the warm-up steps, outside the steady state (end to end includes it)."""

    def run(ctx: Context, timeout: float):
        speed = _speed()
        warm, profile, window = ctx.steady
        batch = ctx.batch_size
        common = {
            "data_dir": ctx.data_dir,
            "seed": 42,
            "device": ctx.device,
            "encoder": str(ctx.model(model)),
            "steady": [warm, window],
            "profile_steps": profile,
            "profile_first": True,
        }
        rows = {}
        started = time.perf_counter()
        rows["trainer"] = speed.in_child(
            "train_baseline",
            timeout=timeout,
            epochs=1000,  # max_steps ends it
            batch_size=batch,
            precision=precision,
            output_dir=str(ctx.scratch / f"trainer_{model}_{precision}"),
            **common,
        )
        rows["sentmtl"] = speed.in_child(
            "train_sentmtl",
            timeout=timeout - (time.perf_counter() - started),
            epochs=None,
            output_dir=str(ctx.scratch / f"sentmtl_{model}_{precision}"),
            extra=[
                *["--per_device_train_batch_size", str(batch), "--bf16", str(precision == "bf16").lower()],
                *(["--max_samples", "400", "--max_eval_samples", "50"] if ctx.dry_run else []),  # teacher, evaluation
                *(["--torch_compile", "true"] if compiled else []),
                *(["--torch_compile_backend", "aot_eager"] if compiled and ctx.dry_run else []),
            ],
            **common,
        )
        for name in rows:
            shutil.rmtree(ctx.scratch / f"{name}_{model}_{precision}", ignore_errors=True)
        steady = rows["sentmtl"]["samples_per_s"] / rows["trainer"]["samples_per_s"]
        e2e = rows["sentmtl"]["e2e_samples_per_s"] / rows["trainer"]["e2e_samples_per_s"]
        result = {
            "model": MODELS[model],
            "precision": precision,
            "compiled": compiled,
            "steady_speedup": steady,
            "e2e_speedup": e2e,
            **rows,
        }
        sentmtl = "sentmtl --torch_compile" if compiled else "sentmtl"
        lines = [
            f"train {MODELS[model]} {precision}, batch {batch}, steady (steps {warm + profile}-{warm + profile + window}"
            f"): {sentmtl} {rows['sentmtl']['samples_per_s']:,.1f} vs plain Trainer "
            f"{rows['trainer']['samples_per_s']:,.1f} samples/s = {steady:.2f}x (target >= 1.3x); end to end "
            f"{e2e:.2f}x",
            *profile_table(rows, ctx.dry_run),
        ]
        return result, lines

    return run


def profile_table(rows: dict, dry_run: bool) -> list[str]:
    """The training rows as a markdown table: steady and end-to-end samples/s, kernels, GPU busy time, host syncs."""

    def cell(row, key, fmt="{:.1f}"):
        return "–" if row.get(key) is None else fmt.format(row[key])

    syncs = "host syncs / step" + (" (CPU proxy: .item() outside the optimizer)" if dry_run else "")
    # On a GPU, torch.cuda's sync debug mode counts the syncs it knows of too: a cross-check on the profiler's count.
    debug = any(row.get("host_syncs_per_step") is not None for row in rows.values())
    lines = [
        f"| path | steady samples/s | end-to-end samples/s | kernels / step | GPU busy ms / step | {syncs} |"
        + (" sync debug mode / step |" if debug else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if debug else ""),
    ]
    for name, row in rows.items():
        cells = [cell(row, k, "{:,.1f}") for k in ("samples_per_s", "e2e_samples_per_s")]
        keys = ("kernels_per_step", "gpu_busy_ms_per_step", "sync_calls_per_step", "host_syncs_per_step")
        cells += [cell(row, k) for k in keys[: 4 if debug else 3]]
        label = "plain Trainer" if name == "trainer" else "sentmtl"
        lines.append(f"| {label} ({row.get('precision', '?')}) | {' | '.join(cells)} |")
    return lines


def embed(model: str):
    """sentmtl.encode against SentenceTransformer.encode on `model`, in one child process."""

    def run(ctx: Context, timeout: float):
        speed = _speed()
        result = speed.in_child(
            "embed",
            script=__file__,
            timeout=timeout,
            data_dir=ctx.data_dir,
            encoder=str(ctx.model(model)),
            device=ctx.device,
            batch_size=ctx.batch_size,
            repeats=ctx.repeats,
            max_sentences=128 if ctx.dry_run else None,
        )
        result.pop("peak_rss_mib")  # several models in one process: not a path's own
        return summarise_embed(result, MODELS[model])

    return run


EMBED_LABELS = {
    "sentmtl_default": "sentmtl.encode default",
    "sentmtl_fp16-weights_unpadded": "sentmtl.encode unpadded",
    "st_fp32": "SentenceTransformer.encode",
    "st_fp16": "SentenceTransformer.encode",
    "st_fp16_unpadded": "SentenceTransformer.encode unpadded",
}


def summarise_embed(result: dict, label: str) -> tuple[dict, list[str]]:
    """Sentences/s by the median pass per path; the default against ST fp32, and sentmtl's fastest path with a
    minimum cosine >= 0.99 to its fp32 embeddings against ST's fastest path."""
    import statistics

    rate = {name: result["n"] / statistics.median(times) for name, times in result["times"].items()}
    good = [n for n in rate if n.startswith("sentmtl") and result["quality"].get(n, {}).get("min_cosine", 0) >= 0.99]
    fastest_ours = max(good, key=rate.get)
    fastest_st = max((n for n in rate if n.startswith("st_")), key=rate.get)
    result.update(
        sentences_per_s=rate,
        speedup_vs_st_fp32=rate["sentmtl_default"] / rate["st_fp32"],
        fastest_sentmtl=fastest_ours,
        fastest_st=fastest_st,
        fastest_vs_fastest=rate[fastest_ours] / rate[fastest_st],
    )

    def path(name):
        return f"{EMBED_LABELS.get(name, 'sentmtl.encode')} ({result['precision'][name]}) {rate[name]:,.0f}/s"

    lines = [
        f"embed {label}, {result['n']:,} sentences, batch {result['batch_size']}: {path('sentmtl_default')} = "
        f"{result['speedup_vs_st_fp32']:.2f}x SentenceTransformer.encode fp32 (target >= 1.3x); fastest sentmtl "
        f"path {path(fastest_ours)} = {result['fastest_vs_fastest']:.2f}x ST's fastest, {path(fastest_st)} "
        "(target >= 1.0x)",
        "| path | precision | median /s | min cosine to its fp32 |",
        "| --- | --- | ---: | ---: |",
    ]
    for name in rate:
        low = result["quality"].get(name, {}).get("min_cosine")
        lines.append(
            f"| {name} | {result['precision'][name]} | {rate[name]:,.1f} | {'–' if low is None else f'{low:.4f}'} |"
        )
    lines += [f"| {name} | – | skipped: {why} | – |" for name, why in result["skipped"].items()]
    return result, lines


def run_mtl(ctx: Context, name: str, flags: list[str], timeout: float) -> dict:
    """run_mtl.py in a process of its own (dry run: 200 sentences, 1 epoch, on the CPU); its train and eval metrics."""
    out = ctx.scratch / name
    command = [
        sys.executable,
        "run_mtl.py",
        "--data_dir",
        ctx.data_dir,
        "--model_name_or_path",
        str(ctx.encoder),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
        *flags,
    ]
    if ctx.dry_run:
        command += ["--max_samples", "200", "--num_train_epochs", "1", "--use_cpu", "true", "--max_eval_samples", "100"]
    code, output, seconds = step(name, command, timeout=timeout)
    result = {"exit_code": code, "wall_s": round(seconds, 1)}
    if code:
        raise ItemFailed({**result, "error": output[-1500:]})
    train = json.loads((out / "train_results.json").read_text())
    metrics = json.loads((out / "eval_results.json").read_text())
    shutil.rmtree(out, ignore_errors=True)  # the weights are not needed back
    return {
        **result,
        "samples_per_s": train["train_samples_per_second"],
        "train_s": train["train_runtime"],
        "task_a_accuracy": metrics["eval_classification_accuracy"],
        "task_b_roc_auc": metrics.get("eval_sentiment_roc_auc"),
        "stsb_spearman": metrics.get("eval_stsb_spearman"),
        "eval_loss": metrics["eval_loss"],
    }


def accuracy(ctx: Context, timeout: float):
    flags = ["--seed", str(ACCURACY_SEED), "--sts_eval_file", str(ctx.prepared / "stsb" / "sts-dev.csv")]
    result = run_mtl(ctx, "accuracy_minilm", flags, timeout)
    task_a, stsb = result["task_a_accuracy"] * 100, result["stsb_spearman"] * 100
    ref_a, ref_stsb = ctx.args.cpu_reference
    within = abs(task_a - ref_a) <= 1 and abs(stsb - ref_stsb) <= 1
    result.update(cpu_reference={"task_a": ref_a, "stsb": ref_stsb}, within_a_point=within)
    line = (
        f"accuracy MiniLM, run_mtl.py defaults, seed {ACCURACY_SEED}: Task A {task_a:.2f}% (CPU {ref_a:.2f}, "
        f"{task_a - ref_a:+.2f}), STS-B dev {stsb:.2f} (CPU {ref_stsb:.2f}, {stsb - ref_stsb:+.2f}): "
        f"{'within' if within else 'NOT within'} a point (target); {result['train_s']:.1f} s of training"
    )
    if ctx.dry_run:
        line += " [dry run: 200 sentences, 1 epoch, 100 STS-B pairs: not comparable]"
    return result, [line]


def train_default(precision: str):
    flags = {"bf16": ["--bf16", "true"], "fp16": ["--bf16", "false", "--fp16", "true"]}[precision]

    def run(ctx: Context, timeout: float):
        result = run_mtl(ctx, f"train_default_{precision}", flags, timeout)
        return result, [
            f"train default configuration {precision}: {result['samples_per_s']:.1f} samples/s, "
            f"{result['train_s']:.1f} s, Task A accuracy {result['task_a_accuracy']:.4f}"
        ]

    return run


def gpu_tests(ctx: Context, timeout: float):
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    code, output, seconds = step("pytest -m gpu", [*command, "tests/e2e/test_gpu.py"], timeout=timeout)
    tail = [line for line in output.splitlines() if " passed" in line or " skipped" in line or " failed" in line]
    result = {"exit_code": code, "result": tail[-1] if tail else output[-500:], "seconds": round(seconds, 1)}
    if code:
        raise ItemFailed(result)
    return result, [f"gpu tests: {result['result']}"]


def speed_py(ctx: Context, timeout: float):
    out = ctx.output_dir / "speed"
    command = [sys.executable, "benchmarks/speed.py", "--data_dir", ctx.data_dir, "--encoder", str(ctx.encoder)]
    command += ["--output_dir", str(out), "--skip_accuracy_check"]
    command += ["--device", "cpu", "--epochs", "0.05", "--repeats", "1"] if ctx.dry_run else ["--device", "cuda"]
    code, output, seconds = step("speed.py", command, timeout=timeout)
    if code:
        raise ItemFailed({"exit_code": code, "error": output[-1500:]})
    result = {"seconds": round(seconds, 1), **json.loads((out / "speed.json").read_text())}
    return result, [
        f"speed.py: train {result['train_speedup']:.2f}x the plain Trainer (batch 16, 1 epoch), embed "
        f"{result['embed_speedup']:.2f}x SentenceTransformer.encode",
        *[line for line in output.splitlines() if line.startswith("| ")],
    ]


# Priority order: the speed issue's targets first (MiniLM training, embedding, the base model's training in the
# precision such a model trains in, accuracy), then the rest of the workload, then the earlier check.
# Estimates (GPU seconds): a child process costs ~10 s before its first step (imports, data, CUDA context; the
# H200's speed.py ran 5 of them and a matmul probe in 65 s); MiniLM at batch 64 is launch-bound at ~25-30 ms a step
# (H200: 36 steps/s at batch 16), 195 steps ≈ 6 s; the stand-in at ~50 ms (6 x 110M x 64 x ~30 tokens ≈ 1.3 TFLOP
# a step in fp32 at ~45 TFLOP/s without TF32), 195 steps ≈ 10 s, plus its 440 MB loaded and the trained copy
# saved; 5 profiled steps and their events ≈ 3 s. Embedding: ~0.5 s (MiniLM) / ~1 s (stand-in) a pass of 3,000
# sentences, 4 paths x 6 passes. accuracy_minilm: the H200's default fp32 run took 49.5 s, STS-B dev adds ~2 s.
ITEMS = [
    Item("train_minilm_fp32", 45, train_pair("minilm", "fp32")),
    Item("embed_minilm", 30, embed("minilm")),
    Item("train_bert_base_bf16", 60, train_pair("bert_base", "bf16")),
    Item("accuracy_minilm", 55, accuracy),
    Item("train_minilm_fp32_compiled", 90, train_pair("minilm", "fp32", compiled=True)),
    Item("embed_bert_base", 35, embed("bert_base")),
    Item("train_bert_base_fp32", 65, train_pair("bert_base", "fp32")),
    Item("train_minilm_bf16", 45, train_pair("minilm", "bf16")),
    Item("gpu_tests", 50, gpu_tests),  # H200: 47.9 s
    Item("train_default_bf16", 75, train_default("bf16")),  # H200: 76.2 s
    Item("train_default_fp16", 70, train_default("fp16"), cuda_only="fp16 autocast is CUDA's"),  # H200: 67.6 s
    Item("speed_py", 120, speed_py),  # H200: 65 s before the steady-state rows (4 more processes)
]


# -- the run ----------------------------------------------------------------------------------------------------------


def step(name: str, command: list[str], timeout: float, env=None) -> tuple[int, str, float]:
    """A command in a process of its own; (exit code, output, seconds). A command still running at `timeout` is
    killed (subprocess.TimeoutExpired)."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})},
    )
    seconds = time.perf_counter() - start
    output = completed.stdout + completed.stderr
    print(output[-3000:] if completed.returncode else output[-800:], flush=True)
    return completed.returncode, output, seconds


def environment() -> dict:
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info.update(
            device=torch.cuda.get_device_name(),
            capability=".".join(map(str, torch.cuda.get_device_capability())),
            memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    else:
        info["device"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return info


def write_report(report: dict, path: Path) -> None:
    """The whole report, replaced at once (a reader never sees half a file)."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2))
    os.replace(partial, path)


def run_item(item: Item, ctx: Context) -> tuple[dict, list[str]]:
    """One item under the budget: skipped (with why) if it cannot start, else run with what is left as its limit.
    (record, summary lines); the record's status is ok, failed, timed_out or skipped."""
    left = ctx.left_s()
    needed = 0.0 if ctx.dry_run else item.estimate_s
    record = {"name": item.name, "estimate_s": item.estimate_s}
    if ctx.dry_run and item.cuda_only:
        note = item.cuda_only
    elif left <= needed:
        note = f"~{item.estimate_s:.0f} s estimated, {max(left, 0):.0f} s left of the {ctx.budget_s:.0f} s budget"
    else:
        note = None
    if note:
        return {**record, "status": "skipped", "note": note}, [f"{item.name}: skipped ({note})"]
    print(
        f"\n=== {item.name} (~{item.estimate_s:.0f} s estimated on a GPU; {left:.0f} s of the budget left)", flush=True
    )
    start = time.perf_counter()
    try:
        result, lines = item.run(ctx, left)
        record.update(status="ok", result=result)
    except subprocess.TimeoutExpired:
        record.update(status="timed_out", note=f"stopped at the end of the {ctx.budget_s:.0f} s budget")
        lines = [f"{item.name}: TIMED OUT ({record['note']})"]
    except ItemFailed as err:
        record.update(status="failed", result=err.result)
        lines = [f"{item.name}: FAILED ({str(err)[-300:]})"]
    except Exception as err:  # a child's error (speed.in_child's RuntimeError) or ours: recorded, the run goes on
        record.update(status="failed", error=f"{type(err).__name__}: {str(err)[-3000:]}")
        lines = [f"{item.name}: FAILED ({type(err).__name__}: {str(err)[-300:]})"]
    record["wall_s"] = round(time.perf_counter() - start, 1)
    return record, lines


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if args.worker:
        kwargs = json.loads(args.worker_args)
        result_path = kwargs.pop("_result")
        Path(result_path).write_text(json.dumps(WORKERS[args.worker](**kwargs)))
        return 0
    prepared = Path(args.prepared_dir).resolve()
    if args.prepare:
        prepare(prepared, wheels=not args.skip_wheels)
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to check the script on the CPU.", file=sys.stderr)
        return 2
    missing = [p for p in (prepared / "encoder" / BF16_WEIGHTS, prepared / "stsb" / "sts-dev.csv") if not p.is_file()]
    if missing:
        print(
            f"gpu_check: {missing[0]} is missing: run `python benchmarks/gpu_check.py --prepare` first.",
            file=sys.stderr,
        )
        return 2
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    items = [i for i in ITEMS if (args.only is None or i.name in args.only) and i.name not in args.skip]
    budget = args.budget_s if args.budget_s is not None else DRY_RUN_BUDGET_S if args.dry_run else BUDGET_S
    report_path = output_dir / "gpu_check.json"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        ctx = Context(
            args=args,
            dry_run=args.dry_run,
            device="cpu" if args.dry_run else "cuda",
            data_dir=args.data_dir or str(prepared / "corpus"),
            prepared=prepared,
            output_dir=output_dir,
            scratch=Path(scratch),
            encoder=encoder_folder(prepared),
            steady=tuple(args.steady_steps or ((1, 1, 2) if args.dry_run else (40, 5, 150))),
            batch_size=args.batch_size or (8 if args.dry_run else 64),
            repeats=args.repeats or (1 if args.dry_run else 5),
            budget_s=budget,
        )
        report = {
            "dry_run": args.dry_run,
            "environment": environment(),
            "budget_s": budget,
            "plan": [{"name": i.name, "estimate_s": i.estimate_s} for i in items],
            "items": [],
            "finished": False,
        }
        write_report(report, report_path)
        env = report["environment"]
        print(f"summary: device: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}", flush=True)
        print(
            f"plan ({budget:.0f} s budget): "
            + ", ".join(f"{i.name} ~{i.estimate_s:.0f} s" for i in items)
            + (" (GPU estimates; not used on the dry run)" if args.dry_run else ""),
            flush=True,
        )
        for item in items:
            record, lines = run_item(item, ctx)
            record["elapsed_s"] = round(time.perf_counter() - ctx.started, 1)
            report["items"].append(record)
            write_report(report, report_path)
            print("\n".join(f"summary: {line}" for line in lines), flush=True)
        report.update(wall_s=round(time.perf_counter() - ctx.started, 1), finished=True)
        write_report(report, report_path)
    counts = {s: sum(r["status"] == s for r in report["items"]) for s in ("ok", "failed", "timed_out", "skipped")}
    print(
        f"summary: wall {report['wall_s']:.0f} s of the {budget:.0f} s budget; "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; wrote {report_path}"
    )
    return 1 if counts["failed"] or counts["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main())
