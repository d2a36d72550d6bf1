"""Distillation targets computed once and kept on disk: a teacher's pooled float32 vector for every row of a table.

A file per key, where the key is everything that changes the vectors — the teacher encoder's weights, its pooling,
the tokenizer, `max_length`, the precision — and the texts themselves (`fingerprints`). A second run on the same
data with the same teacher reads the file (memory-mapped Arrow: the vectors never sit in the process's own memory)
instead of embedding every row again; another seed, test share or `max_samples` reuses it too, since the vectors
are of the whole table, before its split.

Where: `--teacher_cache_dir`, by default `<datasets cache>/sentmtl_teacher_vectors` (HF_DATASETS_CACHE). Each entry
is `<key>.arrow` and `<key>.json` (rows, width, a checksum of the file, what the teacher was); deleting the folder
clears it. Safe under several processes: one computes while the others wait on its lock, then read; a file that does
not match its record is rebuilt (`sentmtl.data.disk_cache`, the mechanics the mined hard negatives share).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from ..utils.fingerprints import (
    combine,
    computed_weights_fingerprint,
    texts_fingerprint,
    tokenizer_fingerprint,
)
from .disk_cache import cached_table

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
            computed_weights_fingerprint(model.encoder),
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
    model,
    tokenizer,
    teacher: str | None,
    max_length: int,
    device=None,
    precision: str = "fp32",
    allow_pickle_weights: bool = False,
) -> Teacher:
    """A distillation teacher (`Teacher`: `encode(sentences) -> pooled vectors` and its cache key): the model as this
    run starts (its encoder, pooled before the projection), or the model at `teacher` (a name or path; a
    sentence-transformers model pooled as it was trained, `loading.load_named_encoder`)."""
    if teacher is not None:
        from ..serving.loading import load_named_encoder

        model, tokenizer = load_named_encoder(teacher, allow_pickle_weights)
    return Teacher.from_model(model, tokenizer, teacher or "the starting encoder", max_length, precision, device)


class Teachers:
    """The run's teachers by name (None: the model as the run starts), each built on first use, on the run's device
    and precision (teacher vectors are computed where and how training runs). `streamed`: the targets of a stream
    are computed while the model trains, so the starting model's teacher is a frozen copy, not the model itself."""

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int,
        device,
        precision: str,
        streamed: bool = False,
        allow_pickle_weights: bool = False,
    ):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.device, self.precision, self.streamed = device, precision, streamed
        self.allow_pickle_weights = allow_pickle_weights
        self.built: dict[str | None, Teacher] = {}

    def __call__(self, name: str | None) -> Teacher:
        if name not in self.built:
            model = self.model
            if self.streamed and name is None:
                import copy

                model = copy.deepcopy(model).requires_grad_(False)
            self.built[name] = teacher_encoder(
                model, self.tokenizer, name, self.max_length, self.device, self.precision, self.allow_pickle_weights
            )
        return self.built[name]

    def clear(self) -> None:
        """Drop the teachers (a teacher loaded from a path is not needed once the data is prepared)."""
        self.built.clear()


def teacher_vectors(
    dataset: datasets.Dataset, column: str, teacher: Teacher, cache_dir=None, chunk_size: int = CHUNK
) -> datasets.Dataset:
    """A one-column (`vectors`) memory-mapped dataset: the teacher's vector of each row's `column` text, in order,
    from the cache or computed (with a progress bar) and cached (`disk_cache.cached_table`: lock, atomic rename)."""
    features = datasets.Features({VECTORS: datasets.List(datasets.Value("float32"), length=teacher.width)})
    if dataset.num_rows == 0:
        return datasets.Dataset.from_dict({VECTORS: []}, features=features)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = combine(CACHE_FORMAT, teacher.key, texts_fingerprint(dataset, column))
    expected = {"format": CACHE_FORMAT, "rows": dataset.num_rows, "width": teacher.width}

    def write(path: Path) -> dict:
        _write(dataset, column, teacher, path, features, chunk_size)
        return {"teacher": teacher.name}

    table, hit = cached_table(folder, key, expected, write, "Teacher vector")
    verb = "read from" if hit else "cached in"
    logger.info("Teacher vectors for %d rows %s the cache (%s).", dataset.num_rows, verb, folder / f"{key}.arrow")
    return table


def _write(dataset, column, teacher: Teacher, path: Path, features, chunk_size: int) -> None:
    writer = ArrowWriter(features=features, path=str(path))
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
    finally:
        writer.close()


__all__ = ["Teacher", "default_cache_dir", "teacher_vectors"]
