"""`run_embed.py`'s command line: its options (`parse_args`) and the checks that refuse combinations a command would
otherwise ignore or could not honour (one export per command, the ONNX backend's limits), as argparse errors."""

import argparse

import torch

from .embed import PRECISIONS
from .embed_io import OUTPUT_SUFFIXES
from .onnx_runtime import VARIANTS

BACKENDS = ("torch", "onnx")
DEFAULT_SEED = 42
# What `run_embed.py --help` shows above the options.
DESCRIPTION = """The command line behind `run_embed.py`: embed sentences (from the command line or a file), or export the model as
a sentence-transformers folder.

    python run_embed.py "The plot twists were unexpected." "The service was satisfactory."
    python run_embed.py --input_file sentences.txt --output_file embeddings.npy --model_name_or_path out/
    python run_embed.py --model_name_or_path out/ --export_sentence_transformer out-st/
    python run_embed.py --model_name_or_path out/ --export_onnx out/onnx        # then --backend onnx
"""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="run_embed.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
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
        help="auto: bf16 autocast where --device runs it fast (cosine ~0.9999 to fp32), else fp32. bf16: autocast "
        "over fp32 weights. fp16-weights / bf16-weights: the encoder's weights cast to fp16 / bf16 for the run "
        "(pooling, projection and normalisation in fp32); fp16-weights is for GPUs (refused on a CPU, where it runs "
        "no faster than fp32).",
    )
    parser.add_argument(
        "--unpadded",
        action="store_true",
        help="Batches without padding, run by flash attention's variable-length kernels: a CUDA GPU, pip install "
        "flash-attn --no-build-isolation, an encoder transformers runs with flash attention, mean or cls pooling, "
        "and --precision fp16-weights or bf16-weights; otherwise refused. --backend torch only, not with --compile.",
    )
    parser.add_argument(
        "--truncate_dim",
        type=positive_int,
        default=None,
        help="Keep the embeddings' first N dimensions, re-normalised (models trained with "
        "matryoshka_dims); with --export_sentence_transformer, the export gives them too.",
    )
    parser.add_argument(
        "--prompt_name",
        default=None,
        help="One of the model's prompts (its config's `prompts`, e.g. query or document) prepended to every sentence "
        "(default: the model's default prompt, if it has one).",
    )
    parser.add_argument(
        "--prompt",
        default=None,
        help="A prefix given as text instead of --prompt_name ('' embeds the sentences as they are).",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="Compile the model's forward with torch.compile before embedding (dynamic shapes: one graph serves every "
        "batch length; kept for every chunk of --input_file). The first batch waits for the compilation (seconds to "
        "minutes); embeddings match the uncompiled ones to a cosine of at least 0.999. --backend torch only.",
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
    if export and args.compile:
        parser.error("--compile applies when embedding; an export writes the model's weights, not a compiled graph")
    if export and args.unpadded:
        parser.error("--unpadded applies when embedding; an export writes the model, which takes padded batches")
    if args.unpadded and args.compile:
        parser.error("--unpadded runs eagerly; --compile is for padded batches (drop one)")
    if export and (args.prompt_name is not None or args.prompt is not None):
        parser.error(
            "--prompt_name / --prompt apply when embedding; an export keeps the model's prompts (its config's) "
            "and takes them by name at encode time"
        )
    if args.export_sentence_transformer and args.precision != "auto":
        # It writes the fp32 weights; a precision is chosen when encoding with it (found in review: it was ignored).
        parser.error(
            f"--precision {args.precision} applies when embedding; --export_sentence_transformer writes the fp32 "
            "weights (choose the precision when encoding with the export)"
        )
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
        if args.compile:
            parser.error("--compile compiles the torch model; --backend onnx runs the exported graph (drop one)")
        if args.unpadded:
            parser.error("--unpadded runs the torch model with flash attention; --backend onnx takes padded batches")
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
