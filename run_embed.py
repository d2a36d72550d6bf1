#!/usr/bin/env python
"""Embed sentences with a sentmtl checkpoint or a plain encoder.

    python run_embed.py "The plot twists were unexpected." "The service was satisfactory."
    python run_embed.py --input_file sentences.txt --output_file embeddings.npy --model_name_or_path out/
    python run_embed.py --model_name_or_path out/ --export_sentence_transformer out-st/
"""

import argparse
import sys

import numpy as np
from transformers import set_seed

from sentmtl.embed import encode, is_sentmtl_checkpoint, load_model_and_tokenizer
from sentmtl.embed_io import read_sentences, write_embeddings

# The seed write-up's examples, embedded when no sentence is given.
SAMPLE_SENTENCES = [
    "The plot twists were unexpected.",
    "The service was satisfactory.",
    "This phone broke after two days, what a waste of money.",
    "I would happily eat here again.",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sentences", nargs="*", help="Sentences to embed (default: the seed's sample sentences).")
    parser.add_argument(
        "--model_name_or_path",
        default=None,
        help="A sentmtl checkpoint folder, or a plain encoder (name or path) around which a fresh, untrained "
        "projection is built. Default: the bundled all-MiniLM-L6-v2.",
    )
    parser.add_argument("--input_file", help="Sentences from a file: .txt (one per line), .csv, .tsv or .jsonl.")
    parser.add_argument("--text_column", default="sentence", help="Column / field holding the text in CSV or JSONL.")
    parser.add_argument("--output_file", help="Write the embeddings: .npy ([n, d] float32) or .jsonl.")
    parser.add_argument("--batch_size", type=int, default=64, help="Sentences per forward pass.")
    parser.add_argument("--max_length", type=int, default=None, help="Truncate to this many tokens (default: the encoder's limit).")
    parser.add_argument("--similarity", action="store_true", help="Print the cosine-similarity matrix.")
    parser.add_argument(
        "--export_sentence_transformer",
        metavar="OUTDIR",
        help="Instead of embedding, write the model as a sentence-transformers folder (Transformer → Pooling → Dense "
        "→ Normalize) that SentenceTransformer(OUTDIR) loads and that embeds exactly as sentmtl does.",
    )
    parser.add_argument("--seed", type=int, default=42, help="Seed for the untrained projection of a plain encoder.")
    args = parser.parse_args(argv)
    if args.export_sentence_transformer and (args.sentences or args.input_file or args.output_file):
        parser.error("--export_sentence_transformer writes a model; it takes no sentences, --input_file or --output_file")
    if args.sentences and args.input_file:
        parser.error("give sentences on the command line or --input_file, not both")
    if args.batch_size < 1:
        parser.error(f"--batch_size {args.batch_size} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_sentence_transformer:
        return export(args)
    sentences = read_sentences(args.input_file, args.text_column) if args.input_file else args.sentences
    sentences = sentences or SAMPLE_SENTENCES

    set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path)
    if not is_sentmtl_checkpoint(args.model_name_or_path or ""):
        print(
            f"Note: {model.config.encoder_name_or_path} is a plain encoder; the shared projection "
            f"({model.config.hidden_size} → {model.config.embedding_size}) is untrained (seed {args.seed}). "
            "Train with run_mtl.py for task-tuned embeddings.",
            file=sys.stderr,
        )
    embeddings = encode(model, sentences, tokenizer, batch_size=args.batch_size, max_length=args.max_length)

    if args.output_file:
        write_embeddings(args.output_file, sentences, embeddings)
        print(f"Wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {args.output_file}")
    if not args.output_file or len(sentences) <= 20:
        for sentence, vector in zip(sentences, embeddings):
            head = ", ".join(f"{v:+.4f}" for v in vector[:6])
            print(f"{sentence[:60]!r}\n  size={vector.size} norm={np.linalg.norm(vector):.4f} [{head}, ...]")
    if args.similarity:
        print_similarity(embeddings)
    return 0


def export(args) -> int:
    from sentmtl.export import export_sentence_transformer

    set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path)
    out = export_sentence_transformer(model, tokenizer, args.export_sentence_transformer, max_seq_length=args.max_length)
    print(f"Wrote a sentence-transformers model to {out}: SentenceTransformer({str(out)!r}).encode(sentences)")
    return 0


def print_similarity(embeddings: np.ndarray) -> None:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    matrix = unit @ unit.T
    print("cosine similarity:")
    print("      " + "".join(f"{j:>8}" for j in range(len(matrix))))
    for i, row in enumerate(matrix):
        print(f"{i:>6}" + "".join(f"{v:8.3f}" for v in row))


if __name__ == "__main__":
    sys.exit(main())
