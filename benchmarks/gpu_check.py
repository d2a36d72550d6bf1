#!/usr/bin/env python
"""The GPU paths in one prepared run: CUDA tests, mixed-precision training, speed against the plain baselines.

A GPU machine lent for a few minutes has no network, no `datasets`, and room for 64 MiB of working tree; the bundled
encoder's fp32 weights (90 MB) and the corpus in ../shared do not travel. So the work is in three steps:

    python benchmarks/gpu_check.py --prepare      # here: .gpu/ (bf16 encoder copy, corpus) and .whl/ (wheels)
    python benchmarks/gpu_check.py --dry-run      # here, on the CPU: every step, tiny sizes, no CUDA
    # there, carrying .gpu and .whl (both git-ignored):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --output_dir $OUT/gpu

The run:
1. prints the device, torch / CUDA / transformers versions;
2. runs `pytest -m gpu` (tests/e2e/test_gpu.py: moves, autocast, encode and run_embed on the GPU, the export);
3. trains the default configuration (run_mtl.py's defaults on the full corpus) in fp32, bf16 and fp16, reporting
   samples/s and Task A accuracy for each;
4. runs benchmarks/speed.py on the same device (training vs the plain Trainer, embedding vs
   SentenceTransformer.encode, matmul peak and FLOP utilisation);
5. writes `gpu_check.json` (and speed.py's files) to --output_dir, and one `summary:` line per measurement.

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
import time
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="Write .gpu/ and .whl/ for the device machine, then stop.")
    mode.add_argument("--dry-run", action="store_true", help="Every step on the CPU with tiny sizes (no CUDA needed).")
    parser.add_argument("--output_dir", default="results/gpu", help="Where gpu_check.json and speed.py's files go.")
    parser.add_argument("--data_dir", default=None, help="The corpus (default: the prepared copy).")
    parser.add_argument(
        "--prepared_dir",
        default=str(REPO_ROOT / ".gpu"),
        help="Where --prepare writes the encoder and corpus copies, and where the run reads them.",
    )
    parser.add_argument("--skip_wheels", action="store_true", help="--prepare without the wheels (for the dry run).")
    parser.add_argument("--skip_tests", action="store_true", help="Leave out step 2.")
    parser.add_argument("--skip_speed", action="store_true", help="Leave out step 4.")
    return parser.parse_args(argv)


# -- preparing, here --------------------------------------------------------------------------------------------------


def prepare(prepared: Path, wheels: bool = True) -> None:
    """The bundled encoder as bf16 (half the bytes), the corpus files, and wheels for Python 3.12 on x86-64."""
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
    corpus = REPO_ROOT.parent / "shared" / "data" / "sentiment_labelled_sentences"
    (prepared / "corpus").mkdir()
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        shutil.copy(corpus / name, prepared / "corpus" / name)
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


# -- the run ----------------------------------------------------------------------------------------------------------


def step(name: str, command: list[str], timeout: float, env=None) -> tuple[int, str, float]:
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


PRECISIONS = {"fp32": ["--bf16", "false"], "bf16": ["--bf16", "true"], "fp16": ["--bf16", "false", "--fp16", "true"]}


def train(precision: str, data_dir: str, encoder: Path, output_dir: Path, dry_run: bool) -> dict:
    """run_mtl.py's default configuration (dry run: 200 sentences, 1 epoch, on the CPU) in one precision."""
    out = output_dir / f"train_{precision}"
    flags = [
        sys.executable,
        "run_mtl.py",
        "--data_dir",
        data_dir,
        "--model_name_or_path",
        str(encoder),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
        *PRECISIONS[precision],
    ]
    if dry_run:
        flags += ["--max_samples", "200", "--num_train_epochs", "1", "--use_cpu", "true"]
    code, output, seconds = step(f"train {precision}", flags, timeout=600)
    result = {"precision": precision, "exit_code": code, "wall_s": round(seconds, 1)}
    if code == 0:
        train_metrics = json.loads((out / "train_results.json").read_text())
        eval_metrics = json.loads((out / "eval_results.json").read_text())
        result.update(
            samples_per_s=train_metrics["train_samples_per_second"],
            train_s=train_metrics["train_runtime"],
            task_a_accuracy=eval_metrics["eval_classification_accuracy"],
            task_b_roc_auc=eval_metrics.get("eval_sentiment_roc_auc"),
            eval_loss=eval_metrics["eval_loss"],
        )
    else:
        result["error"] = output[-1500:]
    shutil.rmtree(out, ignore_errors=True)  # the weights are not needed back, and $OUT returns only small files
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    prepared = Path(args.prepared_dir).resolve()
    if args.prepare:
        prepare(prepared, wheels=not args.skip_wheels)
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to check the script on the CPU.", file=sys.stderr)
        return 2
    if not (prepared / "encoder" / BF16_WEIGHTS).is_file():
        print(
            f"gpu_check: {prepared}/encoder is missing: run `python benchmarks/gpu_check.py --prepare` first.",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or str(prepared / "corpus")
    encoder = encoder_folder(prepared)
    report = {"dry_run": args.dry_run, "environment": environment()}
    summary = [f"device: {report['environment']['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}"]
    print(summary[0], flush=True)

    if not args.skip_tests:
        code, output, seconds = step(
            "pytest -m gpu",
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_gpu.py",
            ],
            timeout=600,
        )
        tail = [line for line in output.splitlines() if " passed" in line or " skipped" in line or " failed" in line]
        report["gpu_tests"] = {
            "exit_code": code,
            "result": tail[-1] if tail else output[-500:],
            "seconds": round(seconds, 1),
        }
        summary.append(f"gpu tests: {report['gpu_tests']['result']} (exit {code})")

    precisions = ["fp32", "bf16"] if args.dry_run else ["fp32", "bf16", "fp16"]  # fp16 autocast is CUDA's
    report["training"] = [train(p, data_dir, encoder, output_dir, args.dry_run) for p in precisions]
    for result in report["training"]:
        if result["exit_code"] == 0:
            summary.append(
                f"train {result['precision']}: {result['samples_per_s']:.1f} samples/s, "
                f"{result['train_s']:.1f} s, Task A accuracy {result['task_a_accuracy']:.4f}"
            )
        else:
            summary.append(f"train {result['precision']}: FAILED (exit {result['exit_code']})")

    if not args.skip_speed:
        speed = [
            sys.executable,
            "benchmarks/speed.py",
            "--data_dir",
            data_dir,
            "--encoder",
            str(encoder),
            "--output_dir",
            str(output_dir / "speed"),
            "--skip_accuracy_check",
        ]
        speed += ["--device", "cpu", "--epochs", "0.05", "--repeats", "1"] if args.dry_run else ["--device", "cuda"]
        code, output, seconds = step("speed.py", speed, timeout=900)
        report["speed"] = {"exit_code": code, "seconds": round(seconds, 1)}
        if code == 0:
            report["speed"].update(json.loads((output_dir / "speed" / "speed.json").read_text()))
            summary.append(
                f"speed: train {report['speed']['train_speedup']:.2f}x the plain Trainer, embed "
                f"{report['speed']['embed_speedup']:.2f}x SentenceTransformer.encode; matmul peak "
                + ", ".join(f"{k} {v / 1000:,.1f} TFLOP/s" for k, v in report["speed"]["matmul_gflops"].items())
            )
            summary += [line for line in output.splitlines() if line.startswith("| ")]
        else:
            summary.append(f"speed: FAILED (exit {code})")

    report["wall_s"] = round(time.perf_counter() - started, 1)
    (output_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print("\n" + "\n".join(f"summary: {line}" for line in summary))
    print(f"summary: wall {report['wall_s']:.0f} s; wrote {output_dir / 'gpu_check.json'}")
    failed = (
        [r for r in report["training"] if r["exit_code"]]
        or report.get("gpu_tests", {}).get("exit_code")
        or report.get("speed", {}).get("exit_code")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
