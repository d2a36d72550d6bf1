"""Reading sentences from files and writing embeddings out, for `run_embed.py` — streamed, so size does not matter.

Bad lines (empty or whitespace-only text, bytes that are not UTF-8, a JSONL line that is not an object or lacks
the text field) are skipped and reported with their file and line, or, with `strict=True`, stop at the first.
Every output row carries (JSONL) or follows (NPY) the order of the valid input lines.
"""

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INPUT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".jsonl")


@dataclass
class InputReport:
    """What reading a file left out: (line number, reason) per skipped line."""

    path: Path
    skipped: list[tuple[int, str]] = field(default_factory=list)
    valid: int = 0

    def summary(self, limit: int = 10) -> str:
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.skipped[:limit])
        more = f"; … and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"{self.path}: skipped {len(self.skipped)} line(s), embedded {self.valid}: {shown}{more}"


def _has_undecodable(text: str) -> bool:
    # With errors="surrogateescape", each byte that is not UTF-8 becomes a lone surrogate U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _bad_bytes(text: str) -> str:
    raw = text.encode("utf-8", errors="surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    return "not valid UTF-8"


def check_input_file(path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise ValueError(f"{path}: unsupported input type {suffix!r}; use one of {', '.join(INPUT_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; nothing to embed.")
    return path


def _decoded_lines(path: Path) -> Iterator[str]:
    """The file's lines split on b"\\n" only (U+0085 and U+2028 occur inside real sentences), undecodable bytes kept
    as surrogates so each line can be judged on its own."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    with open(path, "rb") as handle:
        for raw in handle:
            yield decoder.decode(raw)


def iter_sentences(
    path, text_column: str = "sentence", strict: bool = False, report: InputReport | None = None
) -> Iterator[tuple[int, str]]:
    """(line number, sentence) for each valid line of a `.txt`, `.csv` / `.tsv` or `.jsonl` file, streamed.

    Bad lines go to `report.skipped` (or raise `ValueError` naming file and line when `strict`).
    """
    path = check_input_file(path)
    report = report if report is not None else InputReport(path)
    suffix = path.suffix.lower()

    def bad(line: int, reason: str):
        if strict:
            raise ValueError(f"{path}:{line}: {reason}.")
        report.skipped.append((line, reason))

    def judged(line: int, text) -> str | None:
        if not isinstance(text, str):
            bad(line, f"{text_column!r} is {type(text).__name__}, not text")
        elif _has_undecodable(text):
            bad(line, _bad_bytes(text))
        elif not text.strip():
            bad(line, f"empty sentence {text!r}")
        else:
            report.valid += 1
            return text
        return None

    if suffix == ".txt":
        for number, line in enumerate(_decoded_lines(path), start=1):
            text = judged(number, line.removesuffix("\n").removesuffix("\r"))
            if text is not None:
                yield number, text
    elif suffix == ".jsonl":
        found_field = False
        for number, line in enumerate(_decoded_lines(path), start=1):
            if not line.strip():
                continue  # blank lines between JSON records are not records
            if _has_undecodable(line):
                bad(number, _bad_bytes(line))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                bad(number, f"not a JSON object ({err.msg})")
                continue
            if not isinstance(record, dict) or text_column not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                bad(number, f"no {text_column!r} field (found {keys}); set --text_column")
                continue
            found_field = True
            text = judged(number, record[text_column])
            if text is not None:
                yield number, text
        if not found_field and report.skipped:
            raise ValueError(
                f"{path}: no line has a {text_column!r} field ({report.skipped[0][1]}); set --text_column."
            )
    else:
        reader = csv.reader(_decoded_lines(path), delimiter="\t" if suffix == ".tsv" else ",")
        header = next(reader, None) or []
        if text_column not in header:
            shown = [_bad_bytes(h) if _has_undecodable(h) else h for h in header]
            raise ValueError(f"{path}: no {text_column!r} column (columns: {shown}); set --text_column.")
        column = header.index(text_column)
        for row in reader:
            number = reader.line_num
            if not row:
                continue  # a blank line is no row
            text = judged(number, row[column] if column < len(row) else None)
            if text is not None:
                yield number, text


def read_sentences(path, text_column: str = "sentence", strict: bool = True) -> list[str]:
    """All valid sentences of a file as a list (for small files; `iter_sentences` streams). Strict by default."""
    path = Path(path)
    report = InputReport(path)
    sentences = [text for _, text in iter_sentences(path, text_column, strict=strict, report=report)]
    if not sentences:
        raise ValueError(f"{path}: no sentences found.")
    return sentences


class EmbeddingWriter:
    """Writes `[n, d]` embeddings chunk by chunk: `.npy` (a float32 memory map of known size) or `.jsonl`."""

    def __init__(self, path, count: int, dim: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise ValueError(f"{path}: unsupported output type {suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed when complete: an interrupted run leaves no partial output.
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0
        if suffix == ".npy":
            self.array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.float32, shape=(count, dim))
            self.handle = None
        else:
            self.array = None
            self.handle = open(self.partial, "w", encoding="utf-8")

    def write(self, lines: list[int], sentences: list[str], embeddings: np.ndarray) -> None:
        if self.array is not None:
            self.array[self.rows : self.rows + len(embeddings)] = embeddings
        else:
            self.handle.writelines(
                json.dumps({"line": line, "sentence": sentence, "embedding": vector.tolist()}, ensure_ascii=False)
                + "\n"
                for line, sentence, vector in zip(lines, sentences, embeddings)
            )
        self.rows += len(embeddings)

    def close(self) -> None:
        if self.array is not None:
            self.array.flush()
            del self.array
            self.array = None
        if self.handle is not None:
            self.handle.close()
        self.partial.replace(self.path)


def write_embeddings(path, sentences: list[str], embeddings: np.ndarray) -> None:
    """All at once: `.npy` (the `[n, d]` float32 array) or `.jsonl` (one `{"line", "sentence", "embedding"}` per row)."""
    writer = EmbeddingWriter(path, len(sentences), embeddings.shape[1])
    writer.write(list(range(1, len(sentences) + 1)), list(sentences), embeddings.astype(np.float32, copy=False))
    writer.close()
