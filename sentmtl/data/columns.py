"""A table's columns for the run: `text` (`text_pair`, `negatives`), `domain` and one `target__<task>` column per task,
each task's targets read by its type (`TaskIO.targets`), converted batch by batch and cached on disk.

A `ClassLabel` column is read by its names through the label rule (`_named_values`), so a dataset's own class order
cannot swap classes; a `source` column names the domains the per-domain metrics report.
"""

import inspect
from pathlib import Path

import datasets

from .. import __version__
from ..model.prompts import ROLES
from ..tasks.io import DEFAULT_TEXT_PAIR_COLUMN, LabelMap, task_io
from ..utils.fingerprints import combine
from .files import NO_SOURCE
from .plan import RunTask

TARGET_PREFIX = "target__"
# Rows a stream's lazy steps (conversion, teacher vectors, tokens) take at a time, as the loader reads them: the
# most the stream reads ahead of training.
STREAM_ROWS = 256


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


def role_prefixes(members: list[RunTask], prompt_for, where: str) -> dict[str, str]:
    """{column: prompt} for the text columns (`text`, `text_pair`, `negatives`) of tasks sharing a source, from
    `prompt_for(spec, role)` (the model config's). One forward embeds a row's text once for every task, so tasks that
    read the same texts must give them the same prompt."""
    if prompt_for is None:
        return {}
    prefixes = {}
    for role in ROLES:
        given = {m.spec.name: prompt_for(m.spec, role) for m in members if role in m.spec.kind.text_roles}
        if len(set(given.values())) > 1:
            raise ValueError(
                f"{where}: tasks {sorted(given)} read the same {role} texts with different prompts {given}; a text is "
                "embedded once for all of its tasks. Give them the same prompt, or each its own data."
            )
        if given and (prefix := next(iter(given.values()))):
            prefixes[role] = prefix
    return prefixes


TABLE_FORMAT = 2  # bump when table_columns' output changes: a cached table of another layout is then not reused
BATCH_ROWS = 10_000  # rows converted per step: what a batch needs is all the memory this takes


def table_columns(
    dataset: datasets.Dataset,
    members: list[RunTask],
    where: str,
    line_offset: int | None = None,
    domain_names: list[str] | None = None,
    documents: list[str] = (),
    prompt_for=None,
) -> tuple[datasets.Dataset, list[str]]:
    """`text` (`text_pair`, `negatives`), `domain` and one `target__<task>` column per task (distillation targets
    come later), and the domain names (`domain_names`: another split's, extended). `line_offset`: for a file, the
    line of its first row, so messages name the file's line. `documents`: retrieval distractors appended as rows
    (an evaluation split of contrastive tasks), leaving out any that is one of the split's anchors. `prompt_for(spec,
    role) -> str`: each text column's prompt (`role_prefixes`), prepended here, so that everything after (teacher
    vectors and their cache key, tokens) reads the texts as the model will; the targets are read from the texts
    without them (contrastive ids number sentences, not prompted inputs).

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
    prefixes = role_prefixes(members, prompt_for, where)
    ids: dict[str, int] = {}  # a contrastive task numbers the distinct texts of the whole table, batch after batch

    def texts_of(values, column, rows):
        values = [str(t) if t is not None else "" for t in values]
        for row, sentence in zip(rows, values):
            if not sentence.strip():
                raise ValueError(f"{at(row, column)}: empty text; every row needs text in this column.")
        return values

    def prompted(values, role):
        prefix = prefixes.get(role)
        if not prefix:
            return values
        return [[prefix + v for v in value] if role == "negatives" else prefix + value for value in values]

    def convert(batch: dict, rows: list[int], data_rows: int) -> dict:
        """One batch of rows (`rows`: their positions in the table) → the columns; rows from `data_rows` on are
        retrieval documents (their texts in every text column, no targets)."""
        texts = {"text": texts_of(batch[text], text, rows)}
        if pair:
            texts["text_pair"] = texts_of(batch[pair], pair, rows)
        if negatives:
            texts["negatives"] = [list(row) for row in zip(*(texts_of(batch[c], c, rows) for c in negatives))]
        columns = {role: prompted(values, role) for role, values in texts.items()}
        columns["domain"] = (
            [domain_of(v) for v in batch["source"]] if domain_of and "source" in batch else [NO_SOURCE] * len(rows)
        )
        # The types read the texts without their prompts: a contrastive id numbers a sentence, whichever role's
        # prompt the model reads it with, as without prompts (an anchor's own sentence is never its negative).
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
        prefixes,
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
        anchors = set(table["text"])  # prompted: a document that is an anchor's own text is compared as one
        documents = [d for d in dict.fromkeys(documents) if prefixes.get("text", "") + d not in anchors]
        batch = {text: documents, **({pair: documents} if pair else {}), **{c: documents for c in negatives}}
        for m in ordered:  # a document has no target: its rows carry what the task type makes of none
            column = label_columns[m.spec.name]
            if column is not None and column in dataset.column_names:
                batch.setdefault(column, [None] * len(documents))
        extra = convert(batch, list(range(table.num_rows, table.num_rows + len(documents))), 0)
        table = datasets.concatenate_datasets([table, datasets.Dataset.from_dict(extra, features=table.features)])
    return table, domain_names


__all__ = ["BATCH_ROWS", "STREAM_ROWS", "TABLE_FORMAT", "TARGET_PREFIX", "role_prefixes", "table_columns"]
