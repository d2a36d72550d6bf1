"""The commands behind `run_embed.py` (`main`): embed sentences from the command line or a file (with the torch model
or an exported ONNX graph, `Embedder`), print them and their similarities, or export the model as a
sentence-transformers folder or an ONNX graph. Its arguments (`parse_args`) are `embed_args.py`, importable from here
too."""

import itertools
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import set_seed

from ..utils.errors import USER_ERRORS, debug_requested, one_line
from .embed import default_max_length, encode
from .embed_args import BACKENDS, DEFAULT_SEED, parse_args, positive_int
from .embed_io import (
    EmbeddingWriter,
    InputReport,
    iter_sentences,
    write_embeddings,
)
from .loading import is_sentmtl_checkpoint, load_model_and_tokenizer
from .precision import default_device

# The seed write-up's examples, embedded when no sentence is given.
SAMPLE_SENTENCES = [
    "The plot twists were unexpected.",
    "The service was satisfactory.",
    "This phone broke after two days, what a waste of money.",
    "I would happily eat here again.",
]


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
                prompt_name=args.prompt_name,
                prompt=args.prompt,
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
            prompt_name=args.prompt_name,
            prompt=args.prompt,
            compile=args.compile,
            unpadded=args.unpadded,
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


__all__ = [
    "BACKENDS",
    "DEFAULT_SEED",
    "SAMPLE_SENTENCES",
    "Embedder",
    "embed_file",
    "embed_sentences",
    "export",
    "export_onnx",
    "load",
    "main",
    "parse_args",
    "positive_int",
    "print_embeddings",
    "print_similarity",
    "report_truncated",
]
