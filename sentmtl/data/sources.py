"""Each task's data: where its rows come from, which columns hold its text and targets, and the one train / eval split.

Tasks whose `DataSpec` has the same data and text columns share one *source*: one dataset, one split, one batch for
all of them (the seed's Task A, Task B and distillation ride on the same corpus batches). Sources:

- `uci`: the UCI corpus (`--data_dir`, `--sources`, `--skip_bad_lines` apply);
- `{train_file: …, validation_file: …}`: CSV / TSV / JSON / JSONL / Parquet (`sentmtl.data.files.read_table`);
- `{stsb: folder}`: STS Benchmark sentence pairs (train from sts-train.csv, eval from sts-dev.csv);
- `{dataset: folder or name, train_split: train, eval_split: validation}`: a `datasets` dataset (`save_to_disk`
  folder, or a Hub name where the Hub is reachable).

A source without eval data of its own is split once, leak-free (`split.train_test_split`: near-duplicates of any of
its texts on one side), stratified by its first classification task; `max_samples` takes a stratified subset first.
Each task type reads its own target column (`sentmtl.model.task_spec.io`); an empty cell means "no target on this row".
"""

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .. import __version__
from ..model.task_spec import TaskSpec
from ..tasks.io import DEFAULT_TEXT_PAIR_COLUMN, LabelMap, Readers, task_io
from ..utils.fingerprints import combine
from .corpus import load_sentiment_corpus
from .files import NO_SOURCE, first_line, read_table
from .plan import RunTask
from .split import train_test_split
from .stsb import read_stsb, stsb_file
from .teacher_cache import VECTORS, teacher_vectors

TARGET_PREFIX = "target__"
logger = logging.getLogger(__name__)


@dataclass
class Source:
    """One dataset and the tasks it feeds: raw `text` (`text_pair`), `domain` and `target__<task>` columns.
    `domain_names[i]` names domain id i (the corpus's amazon / imdb / yelp); empty when the data names none."""

    name: str
    tasks: list[TaskSpec]
    train: datasets.Dataset | None
    eval: datasets.Dataset | None
    description: str = ""
    domain_names: list[str] = field(default_factory=list)
    batch_size: int | None = None  # per device; None: the run's
    batches_per_epoch: int | None = None  # None: what the sampling strategy gives it


def _raw_splits(data, data_args) -> tuple[datasets.DatasetDict, str, str, dict]:
    """(DatasetDict(train, test?), a short name, where it came from, {split: line of its first row} for files)."""
    if data == "uci":
        corpus = load_sentiment_corpus(
            data_args.data_dir, data_args.sources, on_bad_lines="skip" if data_args.skip_bad_lines else "error"
        )
        return datasets.DatasetDict({"train": corpus}), "uci", "UCI corpus", {}
    if "stsb" in data:
        train, dev = stsb_file(data["stsb"], "train"), stsb_file(data["stsb"], "dev")
        return (
            datasets.DatasetDict({"train": read_stsb(train), "test": read_stsb(dev)}),
            "stsb",
            f"STS-B ({train.parent})",
            {},
        )
    streaming = bool(data.get("streaming"))
    if "train_file" in data:
        files = {
            "train": data["train_file"],
            **({"test": data["validation_file"]} if data.get("validation_file") else {}),
        }
        # A streamed source streams its training rows only: evaluation needs a fixed table.
        out = {split: read_table(file, streaming=streaming and split == "train") for split, file in files.items()}
        return out, Path(data["train_file"]).stem, data["train_file"], {s: first_line(f) for s, f in files.items()}
    location = data["dataset"]
    on_disk = Path(location).exists()
    loaded = datasets.load_from_disk(location) if on_disk else datasets.load_dataset(location, streaming=streaming)
    train_split, eval_split = data.get("train_split", "train"), data.get("eval_split", "validation")
    for name in (train_split, data.get("eval_split")):
        if name is not None and name not in loaded:  # a named eval split that is missing is a typo, not "split it"
            raise ValueError(f"dataset {location}: no split {name!r} (splits: {list(loaded)}).")
    out = {"train": loaded[train_split]}
    if streaming and on_disk:
        out["train"] = out["train"].to_iterable_dataset()
    if eval_split in loaded:
        out["test"] = loaded[eval_split]
        if streaming and not on_disk:  # evaluation needs a fixed table: the eval split alone, read whole (loading
            # the dataset's split non-streamed would download and prepare every split, the train one included)
            stream = loaded[eval_split]
            out["test"] = datasets.Dataset.from_generator(lambda: (yield from stream), features=stream.features)
    return out, Path(location).name, location, {}


def _stsb_texts(folder) -> list[str]:
    table = read_stsb(stsb_file(folder, "train"))
    return [*table["sentence1"], *table["sentence2"]]


# The readers a task type may use for files of its own (`TaskIO.documents`).
READERS = Readers(table=read_table, stsb_texts=_stsb_texts)


def _domain_index(dataset: datasets.Dataset, names: list[str] | None = None):
    """`(value -> domain id, names)` from a `source` column that names its values (the corpus's ClassLabel, or
    strings); without one — an unnamed integer column included — None (every row is NO_SOURCE) and no name exists.
    `names`: the names already given to another split of the source (train's), so that an id means the same domain
    in both; a value they lack is appended. Read from the column's distinct values (Arrow), not row by row."""
    if "source" not in dataset.column_names:
        return None, list(names or [])
    feature = dataset.features["source"]
    if isinstance(feature, datasets.ClassLabel):
        present = [feature.int2str(v) for v in dataset.unique("source") if v is not None and v >= 0]
        as_name = lambda v: feature.int2str(v) if v is not None and v >= 0 else None  # noqa: E731
    elif getattr(feature, "dtype", None) in ("string", "large_string"):
        present = [str(v) for v in dataset.unique("source") if v is not None]
        as_name = lambda v: str(v) if v is not None else None  # noqa: E731
    else:
        return None, list(names or [])
    names = list(names or []) + sorted(set(present) - set(names or []))
    index = {name: i for i, name in enumerate(names)}
    return (lambda v: index[name] if (name := as_name(v)) is not None else NO_SOURCE), names


def _named_values(feature, values: list, labels: list[str] | None, where: str = "") -> list:
    """A column's values for parsing: a `ClassLabel` column (or a list of them) by its names when every name is one
    of the task's labels by the label rule (`LabelMap`: exactly, or case-insensitively), so a dataset that orders or
    writes its classes otherwise cannot swap them; when none is (a renaming, as `--class_names` does for the corpus)
    by its ids, in id order. Some names matching and others not is refused: neither reading is safe."""
    inner = getattr(feature, "feature", None)
    class_label = (
        feature
        if isinstance(feature, datasets.ClassLabel)
        else inner
        if isinstance(inner, datasets.ClassLabel)
        else None
    )
    if class_label is None or labels is None:
        return list(values)
    lookup = LabelMap(labels)
    matched = [lookup.by_name(name, where) for name in class_label.names]
    if all(label is None for label in matched):
        return list(values)
    if any(label is None for label in matched):
        unmatched = [name for name, label in zip(class_label.names, matched) if label is None]
        raise ValueError(
            f"{where}: the ClassLabel names {class_label.names} are partly the task's labels {labels} ({unmatched} "
            "are not): read by name or by id, classes could be swapped. Use the task's labels as the column's names, "
            "or rename every class."
        )

    def name(value):
        return labels[matched[value]] if value is not None and value >= 0 else None

    return [[name(v) for v in value] if isinstance(value, list) else name(value) for value in values]


TABLE_FORMAT = 2  # bump when table_columns' output changes: a cached table of another layout is then not reused
BATCH_ROWS = 10_000  # rows converted per step: what a batch needs is all the memory this takes


def table_columns(
    dataset: datasets.Dataset,
    members: list[RunTask],
    where: str,
    line_offset: int | None = None,
    domain_names: list[str] | None = None,
    documents: list[str] = (),
) -> tuple[datasets.Dataset, list[str]]:
    """`text` (`text_pair`, `negatives`), `domain` and one `target__<task>` column per task (distillation targets
    come later), and the domain names (`domain_names`: another split's, extended). `line_offset`: for a file, the
    line of its first row, so messages name the file's line. `documents`: retrieval distractors appended as rows
    (an evaluation split of contrastive tasks), leaving out any that is one of the split's anchors.

    Converted batch by batch (`Dataset.map`): a table on disk (a file's, a `datasets` cache's) gives a table on disk,
    memory-mapped, and is reused by the next run on the same file and tasks (a fingerprint of both)."""

    def at(row: int, column: str) -> str:
        place = f"line {row + line_offset}" if line_offset is not None else f"row {row}"
        return f"{where}, {place}, column {column!r}"

    if isinstance(dataset, datasets.IterableDataset) and dataset.column_names is None:
        dataset = dataset._resolve_features()  # reads the first rows for the column names and types
    if isinstance(dataset, datasets.Dataset) and dataset.num_rows == 0:
        raise ValueError(f"{where}: no rows (columns: {dataset.column_names}); every source needs data.")
    first = members[0].data
    text = first.text_column or ("sentence1" if "sentence1" in dataset.column_names else "sentence")
    pair = (first.text_pair_column or DEFAULT_TEXT_PAIR_COLUMN) if any(m.spec.kind.pairs for m in members) else None
    label_columns = {m.spec.name: task_io(m.spec).column(m) for m in members}
    defaults = [m.spec.name for m in members if m.data.label_column is None and label_columns[m.spec.name]]
    shared = sorted(
        {label_columns[n] for n in defaults if [label_columns[d] for d in defaults].count(label_columns[n]) > 1}
    )
    if shared:
        raise ValueError(
            f"{where}: tasks {[n for n in defaults if label_columns[n] in shared]} would all read the column "
            f"{shared[0]!r} by default; name each task's label_column."
        )
    negatives = next((columns for m in members if (columns := task_io(m.spec).negative_columns(m))), [])
    for column in [text, pair, *negatives]:
        if column and column not in dataset.column_names:
            raise ValueError(
                f"{where}: no column {column!r} (columns: {dataset.column_names}); set text_column / "
                "text_pair_column / negative_columns on the task."
            )
    # Targets made from another task's (a score from a class id) are read after it.
    ordered = sorted(members, key=lambda m: bool(task_io(m.spec).depends_on(m)))
    specs = {m.spec.name: m.spec for m in members}
    for m in ordered:
        task_io(m.spec).check_columns(m, dataset.column_names, specs, where)
    streamed = isinstance(dataset, datasets.IterableDataset)
    # A stream names no domains (its distinct `source` values are not known before its end): per-domain metrics
    # are for tables.
    domain_of, domain_names = (None, list(domain_names or [])) if streamed else _domain_index(dataset, domain_names)
    features = dataset.features or {}
    ids: dict[str, int] = {}  # a contrastive task numbers the distinct texts of the whole table, batch after batch

    def texts_of(values, column, rows):
        values = [str(t) if t is not None else "" for t in values]
        for row, sentence in zip(rows, values):
            if not sentence.strip():
                raise ValueError(f"{at(row, column)}: empty text; every row needs text in this column.")
        return values

    def convert(batch: dict, rows: list[int], data_rows: int) -> dict:
        """One batch of rows (`rows`: their positions in the table) → the columns; rows from `data_rows` on are
        retrieval documents (their texts in every text column, no targets)."""
        columns = {"text": texts_of(batch[text], text, rows)}
        if pair:
            columns["text_pair"] = texts_of(batch[pair], pair, rows)
        if negatives:
            columns["negatives"] = [list(row) for row in zip(*(texts_of(batch[c], c, rows) for c in negatives))]
        columns["domain"] = (
            [domain_of(v) for v in batch["source"]] if domain_of and "source" in batch else [NO_SOURCE] * len(rows)
        )
        texts = {key: columns[key] for key in ("text", "text_pair", "negatives") if key in columns}
        parsed = {}
        texts.update(rows=data_rows, ids=ids, targets=parsed, tasks=specs)
        for m in ordered:
            column = label_columns[m.spec.name]
            values = None
            if column is not None and column in batch:
                values = _named_values(
                    features.get(column), batch[column], m.spec.labels, f"{where}, column {column!r}"
                )
            locate = lambda row, c=column: at(rows[row], c)  # noqa: E731
            targets = task_io(m.spec).targets(m, texts, values, locate)
            if targets is not None:
                parsed[m.spec.name] = targets
        columns.update({TARGET_PREFIX + name: values for name, values in parsed.items()})
        return columns

    # Contrastive ids number texts across batches (state a cached table would not have), and documents continue them:
    # such a table is always converted anew (retrieval data is small).
    if streamed:  # converted lazily, as the rows arrive; `rows` are the stream's positions (the file's lines)
        table = dataset.map(
            lambda batch, rows: convert(batch, rows, len(rows)),
            batched=True,
            with_indices=True,
            batch_size=STREAM_ROWS,
            remove_columns=dataset.column_names,
        )
        return table, domain_names
    stateful = any(task_io(m.spec).numbers_texts(m.spec) for m in members)
    # Everything the converted table depends on: the data, the tasks, the code that parses them (sentmtl's version,
    # each type's TaskIO source: a registered type of the user's own included), where rows are numbered from.
    parsers = [inspect.getsource(type(task_io(m.spec))) for m in members]
    fingerprint = combine(
        TABLE_FORMAT,
        __version__,
        parsers,
        dataset._fingerprint,
        [m.to_dict() for m in members],
        where,
        line_offset,
        domain_names,
    )
    table = dataset.map(
        lambda batch, rows: convert(batch, rows, len(rows)),
        batched=True,
        with_indices=True,
        batch_size=BATCH_ROWS,
        remove_columns=dataset.column_names,
        new_fingerprint=fingerprint,
        load_from_cache_file=not stateful,
        desc=f"Reading {Path(where).name}",
    )
    if documents:
        anchors = set(table["text"])
        documents = [d for d in dict.fromkeys(documents) if d not in anchors]
        batch = {text: documents, **({pair: documents} if pair else {}), **{c: documents for c in negatives}}
        for m in ordered:  # a document has no target: its rows carry what the task type makes of none
            column = label_columns[m.spec.name]
            if column is not None and column in dataset.column_names:
                batch.setdefault(column, [None] * len(documents))
        extra = convert(batch, list(range(table.num_rows, table.num_rows + len(documents))), 0)
        table = datasets.concatenate_datasets([table, datasets.Dataset.from_dict(extra, features=table.features)])
    return table, domain_names


def build_sources(run_tasks: list[RunTask], data_args, seed: int, teacher_for=None) -> list[Source]:
    """Group the tasks by their data, load each source once, give it its columns (distillation targets included,
    when `teacher_for(teacher name or None) -> Teacher` is given) and split it once."""
    groups: dict[str, list[RunTask]] = {}
    for task in run_tasks:
        groups.setdefault(task.source_key(), []).append(task)
    sources, split_any = [], False
    for members in groups.values():
        spec = members[0].data
        splits, name, where, lines = _raw_splits(spec.data, data_args)
        train, domain_names = table_columns(splits["train"], members, f"{where} (train)", lines.get("train"))
        cache_dir = getattr(data_args, "teacher_cache_dir", None)
        if spec.streamed:
            train = stream_source(train, members, teacher_for, seed, getattr(data_args, "stream_buffer_size", 10_000))
        elif spec.max_samples is None:  # the whole table's vectors: another seed or test share reuses them
            train = add_teacher_targets(train, members, teacher_for, cache_dir)
        evaluation = None
        documents = [text for m in members for text in task_io(m.spec).documents(m, READERS)]
        if documents and "test" not in splits:
            raise ValueError(
                f"{where}: distractors are added to a source's own evaluation data; give it some "
                "(validation_file, stsb, or a dataset's eval_split)."
            )
        if "test" in splits:
            evaluation, domain_names = table_columns(
                splits["test"], members, f"{where} (eval)", lines.get("test"), domain_names, documents
            )
            evaluation = add_teacher_targets(evaluation, members, teacher_for, cache_dir)
        else:  # no eval data of its own: a leak-free split, stratified by the first classification task
            stratify = next((TARGET_PREFIX + m.spec.name for m in members if task_io(m.spec).stratify_by(m.spec)), None)
            # A hard negative must not sit on both sides either: `negatives` (a list per row) counts as text columns.
            texts = [c for c in ("text", "text_pair", "negatives") if c in train.column_names]
            split = train_test_split(
                train,
                data_args.split_test_size,
                seed,
                spec.max_samples,
                text_column=texts,
                label_column=stratify,
                source_column="domain",
            )
            train, evaluation = split["train"], split["test"]
            if spec.max_samples is not None:  # a subset: only its rows are embedded (cached by their texts)
                train, evaluation = (
                    add_teacher_targets(t, members, teacher_for, cache_dir) for t in (train, evaluation)
                )
        evaluation = bounded(evaluation, getattr(data_args, "max_eval_samples", None), where)
        for m in members:  # a type may leave rows out of training (evaluation keeps them: a contrastive task's
            # rows below min_score are retrieval documents, not pairs)
            column = TARGET_PREFIX + m.spec.name
            keep = task_io(m.spec).training_rows(m, lambda t=train, c=column: t[c], where)
            if keep is not None and not keep.all():
                before, train = train.num_rows, train.select(np.flatnonzero(keep))
                logger.info("%s: task %r trains on %d of %d rows.", where, m.spec.name, train.num_rows, before)
        sources.append(
            Source(
                name,
                [m.spec for m in members],
                train,
                evaluation,
                where,
                domain_names,
                spec.batch_size,
                spec.batches_per_epoch,
            )
        )
        split_any = split_any or "test" not in splits
    if data_args.test_size is not None and not split_any:
        raise ValueError(
            f"--test_size {data_args.test_size}: every source has evaluation data of its own, so nothing "
            "is split. Drop it."
        )
    taken = {}
    for source in sources:  # two sources from different files with the same stem stay apart
        taken[source.name] = taken.get(source.name, 0) + 1
        if taken[source.name] > 1:
            source.name = f"{source.name}{taken[source.name]}"
    return sources


# Rows a stream's lazy steps (conversion, teacher vectors, tokens) take at a time, as the loader reads them: the
# most the stream reads ahead of training.
STREAM_ROWS = 256


def stream_source(
    stream: datasets.IterableDataset, members: list[RunTask], teacher_for, seed: int, buffer_size: int
) -> datasets.IterableDataset:
    """A streamed source's training rows: converted as they arrive (`table_columns`), shuffled through a buffer of
    `buffer_size` rows seeded by (seed, epoch) — the same order every time, which is what makes a resumed run exact —
    and, for a distillation task, its teacher's vectors computed batch by batch as the rows are read (a stream
    cannot be embedded ahead: `teacher_for` must give a frozen teacher, not the model being trained)."""
    stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    for member in members:
        request = task_io(member.spec).teacher(member)
        if teacher_for is not None and request is not None:
            teacher, column = teacher_for(request.name), TARGET_PREFIX + member.spec.name
            stream = stream.map(
                lambda batch, t=teacher, c=column: {c: list(t.encode(list(batch["text"])))},
                batched=True,
                batch_size=STREAM_ROWS,
            )
    return stream


def bounded(dataset: datasets.Dataset | None, limit: int | None, where: str) -> datasets.Dataset | None:
    """At most `limit` rows of an evaluation table (`--max_eval_samples`): a random subset, in table order, the same
    whatever the run's seed (so runs of different seeds on one validation file are measured on the same rows). A
    contrastive task's retrieval corpus shrinks with it: its recall and MRR are not comparable to a full evaluation."""
    if dataset is None or limit is None or dataset.num_rows <= limit:
        return dataset
    keep = np.sort(np.random.default_rng(0).choice(dataset.num_rows, size=limit, replace=False))
    logger.info("%s: evaluating %d of its %d held-out rows (--max_eval_samples).", where, limit, dataset.num_rows)
    return dataset.select(keep)


def add_teacher_targets(
    table: datasets.Dataset, members: list[RunTask], teacher_for, cache_dir=None
) -> datasets.Dataset:
    """Distillation targets: for each distillation task, its teacher's pooled vector of every row's text, computed
    once before training and cached on disk (`sentmtl.data.teacher_cache`), so no second encoder runs per step and a
    second run on the same data reads them. `teacher_for(teacher name or None) -> Teacher`; None: no targets added."""
    if teacher_for is None:
        return table
    for member in members:
        request = task_io(member.spec).teacher(member)
        if request is not None:
            vectors = teacher_vectors(table, "text", teacher_for(request.name), cache_dir)
            table = datasets.concatenate_datasets(
                [table, vectors.rename_column(VECTORS, TARGET_PREFIX + member.spec.name)], axis=1
            )
    return table


__all__ = [
    "Source",
    "TARGET_PREFIX",
    "add_teacher_targets",
    "bounded",
    "build_sources",
    "stream_source",
    "table_columns",
]
