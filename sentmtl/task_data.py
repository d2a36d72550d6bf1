"""Each task's data: where its rows come from, which columns hold its text and targets, and the one train / eval split.

Tasks whose `DataSpec` has the same data and text columns share one *source*: one dataset, one split, one batch for
all of them (the seed's Task A, Task B and distillation ride on the same corpus batches). Sources:

- `uci`: the UCI corpus (`--data_dir`, `--sources`, `--skip_bad_lines` apply);
- `{train_file: …, validation_file: …}`: CSV / TSV / JSON / JSONL / Parquet (`sentmtl.data.read_table`);
- `{stsb: folder}`: STS Benchmark sentence pairs (train from sts-train.csv, eval from sts-dev.csv);
- `{dataset: folder or name, train_split: train, eval_split: validation}`: a `datasets` dataset (`save_to_disk`
  folder, or a Hub name where the Hub is reachable).

A source without eval data of its own is split once, leak-free (`corpus.train_test_split`: near-duplicates of any of
its texts on one side), stratified by its first classification task; `max_samples` takes a stratified subset first.
Each task type reads its own target column (`sentmtl.task_io`); an empty cell means "no target on this row".
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .corpus import load_sentiment_corpus, train_test_split
from .data import NO_SOURCE, first_line, read_table
from .run_tasks import RunTask
from .stsb import read_stsb, stsb_file
from .task_io import task_io
from .tasks import TaskSpec

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
        corpus = load_sentiment_corpus(data_args.data_dir, data_args.sources,
                                       on_bad_lines="skip" if data_args.skip_bad_lines else "error")  # fmt: skip
        return datasets.DatasetDict({"train": corpus}), "uci", "UCI corpus", {}
    if "stsb" in data:
        train, dev = stsb_file(data["stsb"], "train"), stsb_file(data["stsb"], "dev")
        return datasets.DatasetDict({"train": read_stsb(train), "test": read_stsb(dev)}), "stsb", f"STS-B ({train.parent})", {}
    if "train_file" in data:
        files = {"train": data["train_file"], **({"test": data["validation_file"]} if data.get("validation_file") else {})}
        out = datasets.DatasetDict({split: read_table(file) for split, file in files.items()})
        return out, Path(data["train_file"]).stem, data["train_file"], {s: first_line(f) for s, f in files.items()}
    location = data["dataset"]
    loaded = datasets.load_from_disk(location) if Path(location).exists() else datasets.load_dataset(location)
    train_split, eval_split = data.get("train_split", "train"), data.get("eval_split", "validation")
    for name in (train_split, data.get("eval_split")):
        if name is not None and name not in loaded:  # a named eval split that is missing is a typo, not "split it"
            raise ValueError(f"dataset {location}: no split {name!r} (splits: {list(loaded)}).")
    out = {"train": loaded[train_split]}
    if eval_split in loaded:
        out["test"] = loaded[eval_split]
    return datasets.DatasetDict(out), Path(location).name, location, {}


def _documents(spec) -> list[str]:
    """A contrastive source's `distractors`: more retrieval documents for its evaluation."""
    given = spec.distractors
    if not given:
        return []
    if "stsb" in given:
        table = read_stsb(stsb_file(given["stsb"], "train"))
        return [*table["sentence1"], *table["sentence2"]]
    table, path = read_table(given["file"]), given["file"]
    defaults = list(dict.fromkeys([spec.text_column or "sentence1", "sentence", spec.text_pair_column or "sentence2",
                                   *(spec.negative_columns or [])]))  # fmt: skip
    columns = given.get("columns") or [c for c in defaults if c in table.column_names]
    missing = [c for c in columns if c not in table.column_names]
    if missing or not columns:
        raise ValueError(f"distractors {path}: no column {missing or defaults} (columns: {table.column_names}); name "
                         "them with distractors: {file: ..., columns: [...]}.")  # fmt: skip
    texts = [str(t) for column in columns for t in table[column] if t is not None and str(t).strip()]
    if not texts:
        raise ValueError(f"distractors {path}: no text in columns {columns}.")
    return texts


def _domains(dataset: datasets.Dataset, names: list[str] | None = None) -> tuple[list[int], list[str]]:
    """Per-row domain ids and their names, from a `source` column that names its values (the corpus's ClassLabel,
    or strings); without one — an unnamed integer column included — every row is NO_SOURCE and no name exists.
    `names`: the names already given to another split of the source (train's), so that an id means the same domain
    in both; a value they lack is appended."""
    if "source" not in dataset.column_names:
        return [NO_SOURCE] * dataset.num_rows, list(names or [])
    feature, values = dataset.features["source"], list(dataset["source"])
    if isinstance(feature, datasets.ClassLabel):
        values = [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
    elif getattr(feature, "dtype", None) not in ("string", "large_string"):
        return [NO_SOURCE] * dataset.num_rows, list(names or [])
    names = list(names or []) + sorted({str(v) for v in values if v is not None} - set(names or []))
    index = {name: i for i, name in enumerate(names)}
    return [index[str(v)] if v is not None else NO_SOURCE for v in values], names


def _named_values(dataset: datasets.Dataset, column: str, labels: list[str] | None) -> list:
    """A column's values for parsing: a `ClassLabel` column (or a list of them) by its names when they are all among
    the task's labels, so a dataset that orders its classes otherwise cannot swap them; with other names (a renaming,
    as `--class_names` does for the corpus) by its ids, in id order."""
    values, feature = list(dataset[column]), dataset.features[column]
    inner = getattr(feature, "feature", None)
    class_label = feature if isinstance(feature, datasets.ClassLabel) else inner if isinstance(inner, datasets.ClassLabel) else None
    if class_label is None or labels is None or not set(class_label.names) <= set(labels):
        return values
    name = lambda v: class_label.int2str(v) if v is not None and v >= 0 else None  # noqa: E731
    return [[name(v) for v in value] if isinstance(value, list) else name(value) for value in values]


def table_columns(dataset: datasets.Dataset, members: list[RunTask], where: str, line_offset: int | None = None,
                  domain_names: list[str] | None = None, documents: list[str] = ()) -> tuple[datasets.Dataset, list[str]]:  # fmt: skip
    """`text` (`text_pair`, `negatives`), `domain` and one `target__<task>` column per task (distillation targets
    come later), and the domain names (`domain_names`: another split's, extended). `line_offset`: for a file, the
    line of its first row, so messages name the file's line. `documents`: retrieval distractors appended as rows
    (an evaluation split of contrastive tasks), leaving out any that is one of the split's anchors."""

    def at(row: int, column: str) -> str:
        place = f"line {row + line_offset}" if line_offset is not None else f"row {row}"
        return f"{where}, {place}, column {column!r}"

    first = members[0].data
    text = first.text_column or ("sentence1" if "sentence1" in dataset.column_names else "sentence")
    pair = (first.text_pair_column or "sentence2") if any(m.spec.kind.pairs for m in members) else None
    label_columns = {m.spec.name: task_io(m.spec).column(m) for m in members}
    defaults = [m.spec.name for m in members if m.data.label_column is None and label_columns[m.spec.name]]
    shared = sorted({label_columns[n] for n in defaults if [label_columns[d] for d in defaults].count(label_columns[n]) > 1})
    if shared:
        raise ValueError(f"{where}: tasks {[n for n in defaults if label_columns[n] in shared]} would all read the column "
                         f"{shared[0]!r} by default; name each task's label_column.")  # fmt: skip
    negatives = first.negative_columns or []
    for column in [text, pair, *negatives]:
        if column and column not in dataset.column_names:
            raise ValueError(f"{where}: no column {column!r} (columns: {dataset.column_names}); set text_column / "
                             "text_pair_column / negative_columns on the task.")  # fmt: skip

    def texts_of(column):
        values = [str(t) if t is not None else "" for t in dataset[column]]
        for row, sentence in enumerate(values):
            if not sentence.strip():
                raise ValueError(f"{at(row, column)}: empty text; every row needs text in this column.")
        return values

    columns = {"text": texts_of(text)}
    if pair:
        columns["text_pair"] = texts_of(pair)
    if negatives:
        columns["negatives"] = [list(row) for row in zip(*map(texts_of, negatives))]
    columns["domain"], domain_names = _domains(dataset, domain_names)
    rows = len(columns["text"])
    if documents:
        anchors = set(columns["text"])
        documents = [d for d in dict.fromkeys(documents) if d not in anchors]
        columns["text"] += documents
        columns["text_pair"] += documents
        if negatives:  # a document row's every text is the document: one embedding, k + 2 times
            columns["negatives"] += [[d] * len(negatives) for d in documents]
        columns["domain"] += [NO_SOURCE] * len(documents)
    texts = {key: columns[key] for key in ("text", "text_pair", "negatives") if key in columns} | {"rows": rows}
    parsed = {}
    for m in sorted(members, key=lambda m: m.data.score_from is not None):  # derived scores after their source
        column, io = label_columns[m.spec.name], task_io(m.spec)
        if column is not None and column not in dataset.column_names and m.data.score_from is None:
            raise ValueError(f"{where}: no column {column!r} for task {m.spec.name!r} (columns: "
                             f"{dataset.column_names}); set its label_column.")  # fmt: skip
        if io.from_texts:
            values = _named_values(dataset, column, None) if column is not None else None
            parsed[m.spec.name] = io.targets(m, texts, values, lambda row, c=column: at(row, c))
        elif column is None:
            continue
        elif column not in dataset.column_names:
            source = next((x.spec for x in members if x.spec.name == m.data.score_from), None)
            if source is None or not task_io(source).class_ids or source.name not in parsed:
                raise ValueError(f"{where}: task {m.spec.name!r} has no column {column!r}, and score_from "
                                 f"{m.data.score_from!r} is not a classification task of the same data.")  # fmt: skip
            parsed[m.spec.name] = [label / (len(source.labels) - 1) if label >= 0 else float("nan")
                                   for label in parsed[m.data.score_from]]  # fmt: skip
        else:
            values = _named_values(dataset, column, m.spec.labels)
            parsed[m.spec.name] = task_io(m.spec).parse(m.spec, values, lambda row, c=column: at(row, c))
    columns.update({TARGET_PREFIX + name: values for name, values in parsed.items()})
    return datasets.Dataset.from_dict(columns), domain_names


def build_sources(run_tasks: list[RunTask], data_args, seed: int) -> list[Source]:
    """Group the tasks by their data, load each source once, give it its columns and split it once."""
    groups: dict[str, list[RunTask]] = {}
    for task in run_tasks:
        groups.setdefault(task.data.source_key(), []).append(task)
    sources, split_any = [], False
    for members in groups.values():
        spec = members[0].data
        splits, name, where, lines = _raw_splits(spec.data, data_args)
        train, domain_names = table_columns(splits["train"], members, f"{where} (train)", lines.get("train"))
        evaluation = None
        documents = _documents(spec)
        if documents and "test" not in splits:
            raise ValueError(f"{where}: distractors are added to a source's own evaluation data; give it some "
                             "(validation_file, stsb, or a dataset's eval_split).")  # fmt: skip
        if "test" in splits:
            evaluation, domain_names = table_columns(splits["test"], members, f"{where} (eval)", lines.get("test"),
                                                     domain_names, documents)  # fmt: skip
        else:  # no eval data of its own: a leak-free split, stratified by the first classification task
            stratify = next((TARGET_PREFIX + m.spec.name for m in members if task_io(m.spec).class_ids), None)
            texts = ["text", "text_pair"] if "text_pair" in train.column_names else ["text"]
            negatives = []
            if "negatives" in train.column_names:  # a hard negative must not sit on both sides either
                for j in range(len(train[0]["negatives"])):
                    train = train.add_column(f"_negative_{j}", [row[j] for row in train["negatives"]])
                    negatives.append(f"_negative_{j}")
            split = train_test_split(train, data_args.split_test_size, seed, spec.max_samples, text_column=texts + negatives,
                                     label_column=stratify, source_column="domain")  # fmt: skip
            train, evaluation = (split[name].remove_columns(negatives) for name in ("train", "test"))
        if spec.min_score is not None:  # rows below it are not pairs: nothing to train on (evaluation keeps them)
            column = TARGET_PREFIX + members[0].spec.name
            before = train.num_rows
            train = train.filter(lambda row: row[column][0] == 1, desc="min_score")
            logger.info("%s: min_score %s keeps %d of %d training rows as pairs.", where, spec.min_score,
                        train.num_rows, before)  # fmt: skip
            if train.num_rows == 0:
                raise ValueError(f"{where}: no training row has a score >= min_score {spec.min_score}.")
        sources.append(Source(name, [m.spec for m in members], train, evaluation, where, domain_names,
                              spec.batch_size, spec.batches_per_epoch))
        split_any = split_any or "test" not in splits
    if data_args.test_size is not None and not split_any:
        raise ValueError(f"--test_size {data_args.test_size}: every source has evaluation data of its own, so nothing "
                         "is split. Drop it.")  # fmt: skip
    taken = {}
    for source in sources:  # two sources from different files with the same stem stay apart
        taken[source.name] = taken.get(source.name, 0) + 1
        if taken[source.name] > 1:
            source.name = f"{source.name}{taken[source.name]}"
    return sources


def add_teacher_targets(sources: list[Source], run_tasks: list[RunTask], teacher_for) -> None:
    """Distillation targets: a teacher's pooled vector of every sentence, computed once before training
    (`teacher_for(teacher name or None)(sentences) -> np.ndarray`), so no second encoder runs per step."""
    teachers = {task.spec.name: task.data.teacher for task in run_tasks}
    for source in sources:
        for task in source.tasks:
            if task_io(task).teacher_targets:
                encode = teacher_for(teachers.get(task.name))
                for split in ("train", "eval"):
                    dataset = getattr(source, split)
                    if dataset is not None:
                        vectors = np.asarray(encode(list(dataset["text"])), dtype=np.float32)
                        # float32, fixed length: half the Arrow bytes of Python floats (float64), read as such.
                        feature = datasets.List(datasets.Value("float32"), length=vectors.shape[1])
                        setattr(source, split, dataset.add_column(TARGET_PREFIX + task.name, list(vectors), feature=feature))


__all__ = ["Source", "TARGET_PREFIX", "add_teacher_targets", "build_sources", "table_columns"]
