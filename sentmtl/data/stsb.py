"""The STS Benchmark's train / dev files (tab-separated, no header, quotes as text) as sentence-pair datasets."""

from pathlib import Path

import datasets

FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv"}


def read_stsb(path) -> datasets.Dataset:
    """`sentence1`, `sentence2`, `score` (the 0–5 gold score / 5, in [0, 1]) from one STS-B file.

    Fields are split on tabs only (quotes are ordinary text: a CSV reader merges or drops rows), lines on "\\n";
    the score is field 5 and the sentences fields 6–7 (1-based), ignoring the source attributions some lines add.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such STS-B file (expected {' or '.join(FILES.values())}).")
    rows = {"sentence1": [], "sentence2": [], "score": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 7:
            raise ValueError(
                f"{path}:{number}: {len(fields)} tab-separated fields, expected at least 7 "
                "(genre, file, year, id, score, sentence1, sentence2)."
            )
        try:
            score = float(fields[4])
        except ValueError:
            raise ValueError(f"{path}:{number}: score {fields[4]!r} is not a number.") from None
        if not 0.0 <= score <= 5.0:
            raise ValueError(f"{path}:{number}: score {score} is outside 0–5.")
        rows["sentence1"].append(fields[5])
        rows["sentence2"].append(fields[6])
        rows["score"].append(score / 5.0)
    return datasets.Dataset.from_dict(rows)


def stsb_file(location, split: str) -> Path:
    """`location` is the STS-B folder (or a file, returned as it is); `split` is train or dev."""
    location = Path(location)
    return location if location.is_file() else location / FILES[split]


def stsb_spearman(model, tokenizer, path, pooled: bool = False, **encode_kwargs) -> float:
    """The embedding's general similarity: Spearman (0–1, as every correlation sentmtl reports) of the pair cosines
    against STS-B's gold scores; `pooled`: of the encoder's pooled vectors, before the projection — the untouched
    encoder's own score. A run measures STS-B dev through its evaluation instead (`--sts_eval_file`)."""
    from ..serving.embed import encode

    pairs = read_stsb(path)
    a = encode(model, list(pairs["sentence1"]), tokenizer, pooled=pooled, **encode_kwargs)
    b = encode(model, list(pairs["sentence2"]), tokenizer, pooled=pooled, **encode_kwargs)
    return pair_spearman(a, b, pairs["score"])


def pair_spearman(a, b, scores) -> float:
    """Spearman (0–1) of the cosines of rows a[i], b[i] against `scores`."""
    import numpy as np
    from scipy.stats import spearmanr

    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)
    return float(spearmanr(cosines, scores).statistic)
