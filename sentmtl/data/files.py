"""Reading a user's table: CSV / TSV / JSON / JSONL / Parquet files as `datasets` tables, columns as they are."""

from pathlib import Path

import datasets

_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
NO_SOURCE = -1  # the domain id of rows whose data names no domain (per-domain metrics leave them out)


def read_table(path, cache_dir=None, streaming: bool = False) -> datasets.Dataset:
    """A CSV / TSV / JSON / JSONL / Parquet file as a `Dataset`, its columns as they are (memory-mapped: converted
    once into the `datasets` cache), or as an `IterableDataset` read as it is iterated (`streaming`). An empty CSV
    cell is None (or NaN in a numeric column): the task types read it as "no target on this row"."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_LOADERS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    try:
        return datasets.load_dataset(
            _LOADERS[suffix], data_files=str(path), split="train", cache_dir=cache_dir, streaming=streaming, **kwargs
        )
    except ValueError as err:
        if "corresponds to no data" in str(err):  # datasets' words for a file without rows
            raise ValueError(f"{path}: no rows (a header alone, or an empty file); every source needs data.") from None
        raise


def first_line(path) -> int:
    """The file line of a table's first row, as a person counts: CSV's header is line 1."""
    return 2 if Path(path).suffix.lower() in (".csv", ".tsv") else 1
