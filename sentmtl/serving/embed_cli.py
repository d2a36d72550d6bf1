"""The command line behind `run_embed.py`: embed sentences (from the command line or a file), or export the model as
a sentence-transformers folder.

    python run_embed.py "The plot twists were unexpected." "The service was satisfactory."
    python run_embed.py --input_file sentences.txt --output_file embeddings.npy --model_name_or_path out/
    python run_embed.py --model_name_or_path out/ --export_sentence_transformer out-st/
    python run_embed.py --model_name_or_path out/ --export_onnx out/onnx        # then --backend onnx
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import set_seed

from ..utils.errors import USER_ERRORS, debug_requested, one_line
from .embed import PRECISIONS, default_max_length, encode
from .embed_io import (
    OUTPUT_SUFFIXES,
    EmbeddingWriter,
    InputReport,
    iter_sentences,
    write_embeddings,
)
from .loading import is_sentmtl_checkpoint, load_model_and_tokenizer
from .onnx_runtime import VARIANTS
from .precision import default_device

BACKENDS = ("torch", "onnx")
DEFAULT_SEED = 42
# The seed write-up's examples, embedded when no sentence is given.
SAMPLE_SENTENCES = [
    "The plot twists were unexpected.",
    "The service was satisfactory.",
    "This phone broke after two days, what a waste of money.",
    "I would happily eat here again.",
]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="run_embed.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sentences", nargs="*", help="Sentences to embed (default: the seed's sample sentences).")
    parser.add_argument(
        "--model_name_or_path",
        default=None,
        help="A sentmtl checkpoint folder, or a plain encoder (name or path) around which a fresh, untrained "
        "projection is built. Default: the bundled all-MiniLM-L6-v2.",
    )
    parser.add_argument(
        "--input_file", help="Sentences from a file: .txt (one per line), .csv, .tsv or .jsonl; streamed."
    )
    parser.add_argument("--text_column", default="sentence", help="Column / field holding the text in CSV or JSONL.")
    parser.add_argument(
        "--output_file", help="Write the embeddings: .npy ([n, d] float32) or .jsonl (with line numbers)."
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="Stop at the first bad input line (empty, not UTF-8, no text field) instead of skipping it with a report.",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="Sentences per forward pass.")
    parser.add_argument(
        "--chunk_size",
        type=int,
        default=8192,
        help="Sentences read, embedded and written at a time from --input_file (bounds memory on huge files).",
    )
    parser.add_argument(
        "--max_length", type=int, default=None, help="Truncate to this many tokens (default: the encoder's limit)."
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps … Default: the GPU when there is one, else the CPU."
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 where --device runs it fast (cosine ~0.9999 to fp32), else fp32.",
    )
    parser.add_argument(
        "--truncate_dim",
        type=positive_int,
        default=None,
        help="Keep the embeddings' first N dimensions, re-normalised (models trained with "
        "matryoshka_dims); with --export_sentence_transformer, the export gives them too.",
    )
    parser.add_argument("--similarity", action="store_true", help="Print the cosine-similarity matrix.")
    parser.add_argument(
        "--allow_pickle_weights",
        action="store_true",
        help="Also load pickle weights (pytorch_model.bin), which can run code: only if you trust them.",
    )
    parser.add_argument(
        "--export_sentence_transformer",
        metavar="OUTDIR",
        help="Instead of embedding, write the model as a sentence-transformers folder (Transformer → Pooling → Dense "
        "→ Normalize) that SentenceTransformer(OUTDIR) loads and that embeds exactly as sentmtl does.",
    )
    parser.add_argument(
        "--export_onnx",
        metavar="OUTDIR",
        help="Instead of embedding, write the whole model (encoder, pooling, projection, normalisation and every head) "
        "as one ONNX graph, fp32 and two int8 variants, with its tokenizer and sentmtl_onnx.json. "
        'Put it in the run folder\'s onnx/ to serve it with --backend onnx. Needs pip install "sentmtl[onnx]".',
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch: the model itself (--precision applies). onnx: the graph exported with --export_onnx (the "
        "folder --model_name_or_path or its onnx/), run by onnxruntime on the CPU; see --onnx_variant.",
    )
    parser.add_argument(
        "--onnx_variant",
        choices=VARIANTS,
        default=None,
        help="With --backend onnx: int8 (the default: 8-bit weight blocks, cosine >= 0.99 to fp32), "
        "int8_dynamic (fastest on CPUs; min cosine ~0.96) or fp32 (exact).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"Seed for the untrained projection of a plain encoder (default {DEFAULT_SEED}).",
    )
    args = parser.parse_args(argv)
    export = args.export_sentence_transformer or args.export_onnx
    if args.export_sentence_transformer and args.export_onnx:
        parser.error("--export_sentence_transformer and --export_onnx: one export per command")
    if export and (args.sentences or args.input_file or args.output_file):
        option = "--export_onnx" if args.export_onnx else "--export_sentence_transformer"
        parser.error(f"{option} writes a model; it takes no sentences, --input_file or --output_file")
    if args.export_onnx:
        # The graph is fp32 (int8 variants beside it), full size, and takes up to the encoder's token limit.
        for flag, given in (
            ("--truncate_dim", args.truncate_dim is not None),
            ("--max_length", args.max_length is not None),
            (f"--precision {args.precision}", args.precision != "auto"),
        ):
            if given:
                parser.error(
                    f"{flag} does not apply to --export_onnx (the graph gives full-size embeddings in fp32 and "
                    "int8, up to the encoder's token limit); pass it when embedding with --backend onnx"
                )
    if args.onnx_variant is not None and args.backend != "onnx":
        parser.error(f"--onnx_variant {args.onnx_variant} applies to --backend onnx")
    if args.backend == "onnx":
        args.onnx_variant = args.onnx_variant or "int8"
        # Flags the ONNX runtime cannot honour are refused rather than ignored.
        if export:
            parser.error("--backend onnx embeds with an exported graph; exports read the torch model (leave --backend)")
        if args.model_name_or_path is None:
            parser.error("--backend onnx needs --model_name_or_path: a run folder with onnx/ (made by --export_onnx)")
        if args.precision != "auto":
            parser.error(f"--precision {args.precision} applies to --backend torch; with onnx, choose --onnx_variant")
        if args.device not in (None, "cpu"):
            parser.error(
                f"--backend onnx runs on the CPU (onnxruntime's CPU provider); --device {args.device} is not supported"
            )
        if args.allow_pickle_weights:
            parser.error("--allow_pickle_weights loads torch weights; --backend onnx reads none")
        if args.seed is not None:
            parser.error("--seed seeds a plain encoder's fresh projection; --backend onnx serves an exported model")
    args.seed = DEFAULT_SEED if args.seed is None else args.seed
    if args.sentences and args.input_file:
        parser.error("give sentences on the command line or --input_file, not both")
    if args.device is not None:
        try:
            torch.device(args.device)
        except RuntimeError:
            parser.error(f"--device {args.device!r} is not a device; use e.g. cpu, cuda, cuda:1 or mps")
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be >= 1")
    if args.output_file and not args.output_file.lower().endswith(OUTPUT_SUFFIXES):
        parser.error(f"--output_file {args.output_file}: use one of {', '.join(OUTPUT_SUFFIXES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.export_sentence_transformer:
            return export(args)
        if args.export_onnx:
            return export_onnx(args)
        if args.input_file:
            return embed_file(args)
        return embed_sentences(args, args.sentences or SAMPLE_SENTENCES)
    except USER_ERRORS as err:
        if debug_requested():
            raise
        print(one_line("run_embed.py", err), file=sys.stderr)
        return 2


def load(args):
    set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, args.allow_pickle_weights)
    # One device for the whole run; encode() picks the precision for the device the model is on.
    model.to(args.device or default_device())
    if not is_sentmtl_checkpoint(args.model_name_or_path):
        print(
            f"Note: {model.config.encoder_name_or_path} is a plain encoder; the shared projection "
            f"({model.config.hidden_size} → {model.config.embedding_size}) is untrained (seed {args.seed}). "
            "Train with run_mtl.py for task-tuned embeddings.",
            file=sys.stderr,
        )
    return model, tokenizer


class Embedder:
    """`embed(sentences, truncated) -> float32 [n, size]` with the chosen backend, its size and token limit."""

    def __init__(self, args, show_progress_bar: bool | None = None):
        self.args, self.show_progress_bar = args, show_progress_bar
        if args.backend == "onnx":
            from .onnx_runtime import OnnxSentMtl

            self.onnx = OnnxSentMtl.from_pretrained(args.model_name_or_path, args.onnx_variant)
            self.size = args.truncate_dim or self.onnx.embedding_size
            self.max_length = args.max_length or self.onnx.manifest["max_length"]
            if args.truncate_dim is not None and args.truncate_dim > self.onnx.embedding_size:
                raise ValueError(
                    f"--truncate_dim {args.truncate_dim}: the exported embeddings have "
                    f"{self.onnx.embedding_size} dimensions."
                )
        else:
            self.model, self.tokenizer = load(args)
            self.size = args.truncate_dim or self.model.config.embedding_size
            self.max_length = args.max_length or default_max_length(self.tokenizer, self.model)

    def __call__(self, sentences: list[str], truncated: list[int]) -> np.ndarray:
        args = self.args
        if args.backend == "onnx":
            return self.onnx.encode(
                sentences,
                batch_size=args.batch_size,
                max_length=self.max_length,
                truncate_dim=args.truncate_dim,
                show_progress_bar=self.show_progress_bar,
                truncated=truncated,
            )
        return encode(
            self.model,
            sentences,
            self.tokenizer,
            batch_size=args.batch_size,
            max_length=self.max_length,
            precision=args.precision,
            show_progress_bar=self.show_progress_bar,
            truncated=truncated,
            truncate_dim=args.truncate_dim,
        )


def embed_sentences(args, sentences: list[str]) -> int:
    """Sentences from the command line: embed, print, optionally write and compare."""
    blank = [i for i, sentence in enumerate(sentences, start=1) if not sentence.strip()]
    if blank:
        raise ValueError(f"sentence(s) {blank} are empty; every sentence needs text.")
    embedder = Embedder(args)
    truncated = []
    embeddings = embedder(sentences, truncated)
    report_truncated(truncated, len(sentences), embedder.max_length)
    if args.output_file:
        write_embeddings(args.output_file, sentences, embeddings)
        print(f"Wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {args.output_file}")
    print_embeddings(zip(sentences, embeddings))
    if args.similarity:
        print_similarity(embeddings)
    return 0


def embed_file(args) -> int:
    """Two streamed passes over --input_file: check and count the lines, then embed them chunk by chunk."""
    report = InputReport(Path(args.input_file))
    count = sum(1 for _ in iter_sentences(args.input_file, args.text_column, args.strict, report))
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    if count == 0:
        raise ValueError(f"{args.input_file}: no sentences to embed (all {len(report.skipped)} line(s) were skipped).")
    embedder = Embedder(args, show_progress_bar=False)
    max_length, size = embedder.max_length, embedder.size
    writer = EmbeddingWriter(args.output_file, count, size) if args.output_file else None
    kept, truncated_lines, seen = [], [], 0
    lines = iter_sentences(args.input_file, args.text_column, args.strict, InputReport(report.path))
    with tqdm(total=count, desc="Embedding", unit="sentence", disable=count <= 10 * args.batch_size) as bar:
        while chunk := list(itertools.islice(lines, args.chunk_size)):
            numbers, sentences = zip(*chunk)
            truncated = []
            embeddings = embedder(list(sentences), truncated)
            truncated_lines += [numbers[i] for i in truncated]
            if writer is not None:
                writer.write(list(numbers), list(sentences), embeddings)
            if count <= 20:  # small inputs are shown, as for sentences on the command line
                kept += list(zip(sentences, embeddings))
            seen += len(chunk)
            bar.update(len(chunk))
    report_truncated(truncated_lines, seen, max_length, what="line")
    if writer is not None:
        writer.close()
        print(f"Wrote {seen} embeddings of size {size} to {args.output_file}")
    print_embeddings(kept)
    if args.similarity and kept:
        print_similarity(np.stack([vector for _, vector in kept]))
    return 0


def report_truncated(indices: list[int], total: int, max_length: int, what: str = "sentence") -> None:
    if indices:
        shown = ", ".join(str(i + 1 if what == "sentence" else i) for i in indices[:10])
        more = ", …" if len(indices) > 10 else ""
        print(
            f"Truncated {len(indices)} of {total} sentences longer than {max_length} tokens ({what}s {shown}{more}).",
            file=sys.stderr,
        )


def export(args) -> int:
    from .st_export import export_sentence_transformer

    model, tokenizer = load(args)
    out = export_sentence_transformer(
        model,
        tokenizer,
        args.export_sentence_transformer,
        max_seq_length=args.max_length,
        truncate_dim=args.truncate_dim,
    )
    print(f"Wrote a sentence-transformers model to {out}: SentenceTransformer({str(out)!r}).encode(sentences)")
    return 0


def export_onnx(args) -> int:
    from .onnx_export import export_onnx as write_onnx

    model, tokenizer = load(args)
    out = write_onnx(model, tokenizer, args.export_onnx)
    print(
        f"Wrote the ONNX graph (embeddings and {len([t for t in model.tasks if t.has_head])} head(s); fp32, int8, int8_dynamic) "
        f"to {out}: python run_embed.py --backend onnx --model_name_or_path {out}"
    )
    return 0


def print_embeddings(pairs) -> None:
    """For each (sentence, vector): the sentence, the size, the norm and the first values."""
    for sentence, vector in pairs:
        head = ", ".join(f"{v:+.4f}" for v in vector[:6])
        print(f"{sentence[:60]!r}\n  size={vector.size} norm={np.linalg.norm(vector):.4f} [{head}, ...]")


def print_similarity(embeddings: np.ndarray) -> None:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    matrix = unit @ unit.T
    print("cosine similarity:")
    print("      " + "".join(f"{j:>8}" for j in range(len(matrix))))
    for i, row in enumerate(matrix):
        print(f"{i:>6}" + "".join(f"{v:8.3f}" for v in row))
