#!/usr/bin/env python
"""Speed, side by side in one run: sentmtl's default training and embedding paths against the plain baselines.

    python benchmarks/speed.py --data_dir ../shared/data/sentiment_labelled_sentences

1. Training: run_mtl.py's default path (sentmtl.run.run with its defaults: bf16 autocast where the hardware has it,
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder (or zip).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Training epochs for the speed comparison.")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (both paths).")
    parser.add_argument("--embed_batch_size", type=int, default=64, help="Embedding batch size (both paths).")
    parser.add_argument("--repeats", type=int, default=3, help="Embedding passes per path (median reported).")
    parser.add_argument("--seed", type=int, default=42, help="Split and initialisation seed.")
    parser.add_argument("--skip_accuracy_check", action="store_true", help="Skip the full-run accuracy comparison.")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda; both paths run there. Default: the GPU when there is one, else the CPU.")
    parser.add_argument("--encoder", default=None,
                        help="Encoder folder for both paths (default: the bundled all-MiniLM-L6-v2).")
    parser.add_argument("--output_dir", default="results/speed", help="Where speed.json and speed.png go.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one measurement in a child process
    parser.add_argument("--worker_args", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the measurements, each in its own process ---------------------------------------------------------------------


def _splits(data_dir, seed):
    from sentmtl.corpus import load_sentiment_corpus, train_test_split

    return train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)


def _token_lengths(tokenizer, sentences, max_length=128):
    return [len(ids) for ids in tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]]


def _encoder_path(encoder):
    from sentmtl.encoders import bundled_encoder_path

    return encoder or str(bundled_encoder_path())


def worker_train_baseline(data_dir, seed, epochs, batch_size, output_dir, device, encoder):
    """The docs' recipe: AutoModelForSequenceClassification + Trainer, fp32, random batches, dynamic padding."""
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,  # fmt: skip
        set_seed,
    )

    set_seed(seed)
    splits = _splits(data_dir, seed)
    path = _encoder_path(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=128)

    data = {name: split.map(tokenize, batched=True).select_columns(["input_ids", "attention_mask", "token_type_ids", "label"])
            for name, split in splits.items()}  # fmt: skip
    args = TrainingArguments(output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                             per_device_eval_batch_size=64, learning_rate=5e-5, eval_strategy="no", save_strategy="no",
                             report_to="none", use_cpu=device == "cpu", disable_tqdm=True, logging_steps=50,
                             seed=seed)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                      data_collator=DataCollatorWithPadding(tokenizer))  # fmt: skip
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    predictions = trainer.predict(data["test"])
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {"samples_per_s": result.metrics["train_samples_per_second"], "train_s": wall, "accuracy": accuracy,
            "precision": "fp32", "tokens": sum(_token_lengths(tokenizer, splits["train"]["sentence"])) * epochs,
            "samples": len(splits["train"]) * epochs}  # fmt: skip


def worker_train_sentmtl(data_dir, seed, epochs, output_dir, device, encoder, extra=()):
    """run_mtl.py's default path, in-process (the same `run()` the CLI calls)."""
    from sentmtl.run import parse_args as run_parse_args
    from sentmtl.run import run

    flags = ["--data_dir", data_dir, "--output_dir", output_dir, "--seed", str(seed), "--eval_strategy", "no",
             "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", str(device == "cpu").lower(),
             *(["--model_name_or_path", encoder] if encoder else []), *extra]  # fmt: skip
    if epochs is not None:  # None: run_mtl.py's default
        flags += ["--num_train_epochs", str(epochs)]
    model_args, data_args, training_args = run_parse_args(flags)
    epochs = training_args.num_train_epochs
    result = run(model_args, data_args, training_args)
    train = result.train_metrics
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    sentences = _splits(data_dir, seed)["train"]["sentence"]
    return {"samples_per_s": train["train_samples_per_second"], "train_s": train["train_runtime"],
            "accuracy": result.metrics["eval_classification_accuracy"], "precision": "bf16" if training_args.bf16 else "fp32",
            "tokens": sum(_token_lengths(tokenizer, sentences)) * epochs,
            "samples": len(sentences) * epochs, "epochs": epochs}  # fmt: skip


def worker_embed(data_dir, batch_size, repeats, device, encoder):
    """sentmtl.encode (default precision) vs SentenceTransformer.encode, interleaved; plus the fp32 reference."""
    import warnings

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    import sentmtl
    from sentmtl.corpus import load_sentiment_corpus
    from sentmtl.precision import fast_bf16_available

    sentences = list(load_sentiment_corpus(data_dir)["sentence"])
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(encoder)
    model.to(device)
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(_encoder_path(encoder), device=device)
    ours_s, st_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours = sentmtl.encode(model, sentences, tokenizer, batch_size=batch_size, show_progress_bar=False)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        st_model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
        st_s.append(time.perf_counter() - start)
    reference = sentmtl.encode(model, sentences, tokenizer, batch_size=batch_size, precision="fp32",
                               show_progress_bar=False)  # fmt: skip
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    tokens = sum(_token_lengths(tokenizer, sentences, max_length=512))
    return {"ours_s": ours_s, "st_s": st_s, "min_cosine": float(cosine.min()), "n": len(sentences),
            "tokens": tokens, "precision": "bf16" if fast_bf16_available(torch.device(device).type) else "fp32"}  # fmt: skip


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


WORKERS = {"train_baseline": worker_train_baseline, "train_sentmtl": worker_train_sentmtl, "embed": worker_embed,
           "matmul": worker_matmul}  # fmt: skip


def in_child(name: str, **kwargs) -> dict:
    """Run one worker in a fresh Python process; its result plus its peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
        command = [sys.executable, __file__, "--data_dir", "-", "--worker", name,
                   "--worker_args", json.dumps({**kwargs, "_result": result_file.name})]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        completed = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                                   capture_output=True, text=True)  # fmt: skip
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

    from sentmtl.precision import default_device

    started = time.perf_counter()
    data_dir = str(Path(args.data_dir).resolve())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = args.device or default_device().type
    encoder = str(Path(args.encoder).resolve()) if args.encoder else None
    config = AutoConfig.from_pretrained(_encoder_path(encoder))
    where = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"device: {device} ({where}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    common = {"device": device, "encoder": encoder}

    peak = in_child("matmul", device=device)
    peak.pop("peak_rss_mib")  # a GFLOP/s table, not a process measurement
    print("matmul peak: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = in_child("train_baseline", data_dir=data_dir, seed=args.seed, epochs=args.epochs,
                            batch_size=args.batch_size, output_dir=f"{tmp}/baseline", **common)  # fmt: skip
        print(f"train baseline: {baseline['samples_per_s']:.1f} samples/s", flush=True)
        ours = in_child("train_sentmtl", data_dir=data_dir, seed=args.seed, epochs=args.epochs,
                        output_dir=f"{tmp}/sentmtl", **common,
                        extra=["--per_device_train_batch_size", str(args.batch_size)])  # fmt: skip
        print(f"train sentmtl: {ours['samples_per_s']:.1f} samples/s", flush=True)
        embed = in_child("embed", data_dir=data_dir, batch_size=args.embed_batch_size, repeats=args.repeats, **common)
        accuracy = None
        if not args.skip_accuracy_check:
            full = in_child("train_sentmtl", data_dir=data_dir, seed=args.seed, epochs=None, output_dir=f"{tmp}/full",
                            **common)  # fmt: skip
            plain = in_child("train_sentmtl", data_dir=data_dir, seed=args.seed, epochs=None, output_dir=f"{tmp}/fp32",
                             extra=["--bf16", "false", "--train_sampling_strategy", "random"], **common)  # fmt: skip
            accuracy = {"default": full, "fp32_random": plain}

    def utilisation(samples_per_s, tokens, samples, precision, training):
        flops = encoder_flops_per_token(config, tokens / samples) * tokens / samples * (3 if training else 1)
        return samples_per_s * flops / (peak[precision] * 1e9)

    ours_eps = embed["n"] / statistics.median(embed["ours_s"])
    st_eps = embed["n"] / statistics.median(embed["st_s"])
    rows = [
        ("train: Trainer + AutoModelForSequenceClassification (fp32)", baseline["samples_per_s"], baseline["train_s"],
         baseline["peak_rss_mib"], baseline["accuracy"], "fp32",
         utilisation(baseline["samples_per_s"], baseline["tokens"], baseline["samples"], "fp32", True)),
        (f"train: sentmtl default ({ours['precision']}, length-grouped)", ours["samples_per_s"], ours["train_s"],
         ours["peak_rss_mib"], ours["accuracy"], ours["precision"],
         utilisation(ours["samples_per_s"], ours["tokens"], ours["samples"], ours["precision"], True)),
        ("embed: SentenceTransformer.encode (fp32)", st_eps, statistics.median(embed["st_s"]), None, None, "fp32",
         utilisation(st_eps, embed["tokens"], embed["n"], "fp32", False)),
        (f"embed: sentmtl.encode ({embed['precision']})", ours_eps, statistics.median(embed["ours_s"]),
         embed["peak_rss_mib"], None, embed["precision"],
         utilisation(ours_eps, embed["tokens"], embed["n"], embed["precision"], False)),
    ]  # fmt: skip
    train_speedup = ours["samples_per_s"] / baseline["samples_per_s"]
    embed_speedup = ours_eps / st_eps

    print(f"\n{args.epochs:g} training epoch(s) on the 80% split, embedding of the corpus's {embed['n']:,} sentences; "
          f"median of {args.repeats} embedding passes.\n")  # fmt: skip
    print("| path | samples/s | time (s) | peak RSS (MiB) | Task A acc | precision | FLOP utilisation |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name, sps, seconds, rss, acc, precision, util in rows:
        rss_text = f"{rss:,.0f}" if rss else "–"
        acc_text = f"{acc:.4f}" if acc is not None else "–"
        print(f"| {name} | {sps:.1f} | {seconds:.1f} | {rss_text} | {acc_text} | {precision} | {util:.1%} |")
    print("\nmatmul peak: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peak.items()))
    print(f"embedding min cosine vs fp32 reference: {embed['min_cosine']:.6f}")
    if accuracy:
        print(f"full default run ({accuracy['default']['epochs']:g} epochs), Task A "
              f"accuracy (seed {args.seed}): default {accuracy['default']['accuracy']:.4f} "
              f"({accuracy['default']['train_s']:.0f} s) vs fp32 random batches {accuracy['fp32_random']['accuracy']:.4f} "
              f"({accuracy['fp32_random']['train_s']:.0f} s)")  # fmt: skip
    summary = {"device": device, "device_name": where, "matmul_gflops": peak, "train_baseline": baseline, "train_sentmtl": ours, "embed": embed,
               "accuracy_3_epochs": accuracy, "train_speedup": train_speedup, "embed_speedup": embed_speedup,
               "wall_s": time.perf_counter() - started}  # fmt: skip
    (output_dir / "speed.json").write_text(json.dumps(summary, indent=2))
    plot(rows, output_dir / "speed.png")
    print(f"wall time {summary['wall_s'] / 60:.1f} min; wrote {output_dir / 'speed.json'} and {output_dir / 'speed.png'}")
    print(f"train_speedup: {train_speedup:.2f}")
    print(f"embed_speedup: {embed_speedup:.2f}")
    return 0


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, kind in zip(axes, ("train", "embed")):
        selected = [row for row in rows if row[0].startswith(kind)]
        ax.barh([row[0].split(": ", 1)[1] for row in selected], [row[1] for row in selected],
                color=["#999999", "#1f77b4"])  # fmt: skip
        ax.set_xlabel("samples / s" if kind == "train" else "sentences / s")
        ax.set_title(kind)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
