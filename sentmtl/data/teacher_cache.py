"""Distillation targets computed once and kept on disk: a teacher's pooled float32 vector for every row of a table.

A file per key, where the key is everything that changes the vectors — the teacher encoder's weights, its pooling,
the tokenizer, `max_length`, the precision — and the texts themselves (`fingerprints`). A second run on the same
data with the same teacher reads the file (memory-mapped Arrow: the vectors never sit in the process's own memory)
instead of embedding every row again; another seed, test share or `max_samples` reuses it too, since the vectors
are of the whole table, before its split.

Where: `--teacher_cache_dir`, by default `<datasets cache>/sentmtl_teacher_vectors` (HF_DATASETS_CACHE). Each entry
is `<key>.arrow` and `<key>.json` (rows, width, a checksum of the file, what the teacher was); deleting the folder
clears it. Safe under several processes (the ranks of one DDP run, or two runs at once): one holds `<key>.lock`
while it computes and writes, the others wait on that lock and then read what it wrote; a file is only ever
complete, since it is written under a temporary name and renamed. A file that does not match its record
(truncated, edited, the record lost) is rebuilt, with a warning.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import xxhash
from datasets.arrow_writer import ArrowWriter
from filelock import FileLock
from tqdm.auto import tqdm

from ..utils.fingerprints import combine, texts_fingerprint, tokenizer_fingerprint, weights_fingerprint

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when the file layout changes: older entries are then misses, not misreads
VECTORS = "vectors"
CHUNK = 8192  # sentences embedded per call: large enough for length-sorted batches, small enough to bound memory


def default_cache_dir() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "sentmtl_teacher_vectors"


@dataclass
class Teacher:
    """A distillation teacher: `encode(sentences) -> float32 [n, width]` and `key`, a hash of everything besides
    the texts that changes those vectors. `name`: what it is, for messages and the record."""

    name: str
    key: str
    width: int
    encode: object

    @classmethod
    def from_model(cls, model, tokenizer, name: str, max_length: int, precision: str, device=None) -> "Teacher":
        """The pooled encoder output of a `SentMtlModel` (before its projection)."""
        from .. import __version__  # how encode pools and truncates is part of the vectors
        from ..serving.embed import encode  # embed imports the model: not needed to read a cache

        key = combine(
            "teacher",
            __version__,
            weights_fingerprint(model.encoder),
            model.config.pooling,
            tokenizer_fingerprint(tokenizer),
            max_length,
            precision,
        )

        def run(sentences):
            return encode(
                model,
                sentences,
                tokenizer,
                pooled=True,
                show_progress_bar=False,
                max_length=max_length,
                precision=precision,
                device=device,
                prompt="",  # the texts come prompted as the task's texts are (`table_columns`)
            )

        return cls(name, key, model.config.hidden_size, run)


def teacher_encoder(
    model, tokenizer, teacher: str | None, max_length: int, device=None, precision: str = "fp32"
) -> Teacher:
    """A distillation teacher (`Teacher`: `encode(sentences) -> pooled vectors` and its cache key): the model as this
    run starts (its encoder, pooled before the projection), or the model at `teacher` (a name or path)."""
    if teacher is not None:
        from ..serving.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(teacher)
    return Teacher.from_model(model, tokenizer, teacher or "the starting encoder", max_length, precision, device)


class Teachers:
    """The run's teachers by name (None: the model as the run starts), each built on first use, on the run's device
    and precision (teacher vectors are computed where and how training runs). `streamed`: the targets of a stream
    are computed while the model trains, so the starting model's teacher is a frozen copy, not the model itself."""

    def __init__(self, model, tokenizer, max_length: int, device, precision: str, streamed: bool = False):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.device, self.precision, self.streamed = device, precision, streamed
        self.built: dict[str | None, Teacher] = {}

    def __call__(self, name: str | None) -> Teacher:
        if name not in self.built:
            model = self.model
            if self.streamed and name is None:
                import copy

                model = copy.deepcopy(model).requires_grad_(False)
            self.built[name] = teacher_encoder(
                model, self.tokenizer, name, self.max_length, self.device, self.precision
            )
        return self.built[name]

    def clear(self) -> None:
        """Drop the teachers (a teacher loaded from a path is not needed once the data is prepared)."""
        self.built.clear()


def teacher_vectors(
    dataset: datasets.Dataset, column: str, teacher: Teacher, cache_dir=None, chunk_size: int = CHUNK
) -> datasets.Dataset:
    """A one-column (`vectors`) memory-mapped dataset: the teacher's vector of each row's `column` text, in order,
    from the cache or computed (with a progress bar) and cached."""
    features = datasets.Features({VECTORS: datasets.List(datasets.Value("float32"), length=teacher.width)})
    if dataset.num_rows == 0:
        return datasets.Dataset.from_dict({VECTORS: []}, features=features)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = combine(CACHE_FORMAT, teacher.key, texts_fingerprint(dataset, column))
    path, record = folder / f"{key}.arrow", folder / f"{key}.json"
    # One process computes; the others wait here, then find the file complete.
    with FileLock(str(folder / f"{key}.lock")):
        cached = _read(path, record, dataset.num_rows, teacher.width)
        if cached is not None:
            logger.info("Teacher vectors for %d rows read from the cache (%s).", dataset.num_rows, path)
            return cached
        _write(dataset, column, teacher, path, record, features, chunk_size)
        return _read(path, record, dataset.num_rows, teacher.width, warn=False)


def _checksum(path: Path) -> str:
    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path, record: Path, rows: int, width: int, warn: bool = True) -> datasets.Dataset | None:
    """The cached vectors, or None on a miss; a file that does not match its record is removed, with a warning."""
    if not path.exists() and not record.exists():
        return None
    try:
        saved = json.loads(record.read_text())
        if (saved.get("rows"), saved.get("width")) != (rows, width):
            raise ValueError(
                f"it records {saved.get('rows')} rows × {saved.get('width')}, the data needs {rows} × {width}"
            )
        if _checksum(path) != saved.get("checksum"):
            raise ValueError("its checksum does not match its record (truncated or changed)")
        table = datasets.Dataset.from_file(str(path))
        if table.num_rows != rows:
            raise ValueError(f"it holds {table.num_rows} rows, its record says {rows}")
        return table
    except (OSError, ValueError, pa.ArrowException) as err:  # a missing record or file is an OSError
        if not warn:
            raise
        logger.warning("Teacher vector cache %s is unreadable (%s): rebuilding it.", path, err)
        for stale in (path, record):
            stale.unlink(missing_ok=True)
        return None


def _write(dataset, column, teacher: Teacher, path: Path, record: Path, features, chunk_size: int) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    writer = ArrowWriter(features=features, path=str(temporary))
    try:
        with tqdm(
            total=dataset.num_rows,
            unit=" sentences",
            desc=f"Teacher vectors ({teacher.name})",
            disable=dataset.num_rows <= 1000,
        ) as bar:
            for batch in dataset.select_columns([column]).iter(batch_size=chunk_size):
                vectors = np.ascontiguousarray(teacher.encode(list(batch[column])), dtype=np.float32)
                flat = pa.array(vectors.reshape(-1))
                writer.write_table(
                    pa.table(
                        {VECTORS: pa.FixedSizeListArray.from_arrays(flat, teacher.width)}, schema=features.arrow_schema
                    )
                )
                bar.update(len(vectors))
        writer.finalize()
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    writer.close()
    checksum = _checksum(temporary)
    os.replace(temporary, path)
    record_text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "rows": dataset.num_rows,
            "width": teacher.width,
            "checksum": checksum,
            "teacher": teacher.name,
        },
        indent=1,
    )
    temporary_record = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    temporary_record.write_text(record_text)
    os.replace(temporary_record, record)
    logger.info("Teacher vectors for %d rows cached in %s.", dataset.num_rows, path)


__all__ = ["Teacher", "default_cache_dir", "teacher_vectors"]
