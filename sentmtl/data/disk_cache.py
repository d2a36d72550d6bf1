"""One Arrow file per key, safe under several processes: the mechanics the teacher vectors and the mined hard negatives
share (`sentmtl.data.teacher_cache`, `sentmtl.data.mining`).

An entry is `<key>.arrow` and `<key>.json` (its record: what it holds and a checksum of the file). One process holds
`<key>.lock` while it computes and writes; the others (the ranks of a DDP run, or two runs at once) wait on that lock
and then read what it wrote — a file lock, not a DDP barrier, so a long first computation cannot run into the
barrier's timeout. A file is only ever complete, since it is written under a temporary name and renamed. A file that
does not match its record (truncated, edited, the record lost) is rebuilt, with a warning.
"""

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow as pa
import xxhash
from filelock import FileLock

logger = logging.getLogger(__name__)


def cached_table(
    folder, key: str, expected: dict, write: Callable[[Path], dict], what: str
) -> tuple[datasets.Dataset, bool]:
    """(the memory-mapped table of entry `key` in `folder`, whether it was read from the cache). `expected`: record
    fields the entry must have (`rows` among them: the table's row count); on a miss `write(path)` writes the Arrow
    file at `path` and returns more fields for the record. `what` names the entry in messages."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, record = folder / f"{key}.arrow", folder / f"{key}.json"
    # One process computes; the others wait here, then find the file complete.
    with FileLock(str(folder / f"{key}.lock")):
        cached = _read(path, record, expected, what)
        if cached is not None:
            return cached, True
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            extra = write(temporary)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        checksum = _checksum(temporary)
        os.replace(temporary, path)
        temporary_record = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        temporary_record.write_text(json.dumps({**expected, "checksum": checksum, **extra}, indent=1))
        os.replace(temporary_record, record)
        return _read(path, record, expected, what, warn=False), False


def _checksum(path: Path) -> str:
    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path, record: Path, expected: dict, what: str, warn: bool = True) -> datasets.Dataset | None:
    """The cached table, or None on a miss; a file that does not match its record is removed, with a warning."""
    if not path.exists() and not record.exists():
        return None
    try:
        saved = json.loads(record.read_text())
        differ = {name: saved.get(name) for name, value in expected.items() if saved.get(name) != value}
        if differ:
            raise ValueError(f"it records {differ}, the data needs {expected}")
        if _checksum(path) != saved.get("checksum"):
            raise ValueError("its checksum does not match its record (truncated or changed)")
        table = datasets.Dataset.from_file(str(path))
        if table.num_rows != expected["rows"]:
            raise ValueError(f"it holds {table.num_rows} rows, its record says {expected['rows']}")
        return table
    except (OSError, ValueError, pa.ArrowException) as err:  # a missing record or file is an OSError
        if not warn:
            raise
        logger.warning("%s cache %s is unreadable (%s): rebuilding it.", what, path, err)
        for stale in (path, record):
            stale.unlink(missing_ok=True)
        return None


__all__ = ["cached_table"]
