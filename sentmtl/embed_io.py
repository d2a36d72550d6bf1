"""Reading sentences from files and writing embeddings out, for `run_embed.py`."""

import csv
import json
from pathlib import Path

import numpy as np

INPUT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".jsonl")


def read_sentences(path, text_column: str = "sentence") -> list[str]:
    """Sentences from a `.txt` (one per line), `.csv` / `.tsv` or `.jsonl` file (the `text_column` field).

    Blank sentences are an error naming the file and line, so no row of the output is silently missing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise ValueError(f"{path}: unsupported input type {suffix!r}; use one of {', '.join(INPUT_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start}).") from None

    if suffix == ".txt":
        # Split on "\n" only: str.splitlines() also breaks on U+0085 and friends, which occur inside real sentences.
        rows = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]
        if rows and rows[-1][1] == "":
            rows.pop()  # the file's final newline
    elif suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON object ({err.msg}).") from None
            if not isinstance(record, dict) or text_column not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"{path}:{number}: no {text_column!r} field (found {keys}); set --text_column.")
            rows.append((number, record[text_column]))
    else:
        reader = csv.DictReader(text.split("\n"), delimiter="\t" if suffix == ".tsv" else ",")
        if text_column not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no {text_column!r} column (columns: {reader.fieldnames}); set --text_column.")
        rows = [(reader.line_num, record[text_column]) for record in reader]

    if not rows:
        raise ValueError(f"{path}: no sentences found.")
    for number, sentence in rows:
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"{path}:{number}: empty sentence {sentence!r}; remove the line or give it text.")
    return [sentence for _, sentence in rows]


def write_embeddings(path, sentences: list[str], embeddings: np.ndarray) -> None:
    """`.npy`: the `[n, d]` float32 array; `.jsonl`: one `{"sentence", "embedding"}` object per line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{path}: unsupported output type {suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, embeddings.astype(np.float32, copy=False))
        return
    with open(path, "w", encoding="utf-8") as handle:
        for sentence, vector in zip(sentences, embeddings):
            handle.write(json.dumps({"sentence": sentence, "embedding": vector.tolist()}, ensure_ascii=False) + "\n")
