"""Each task's data: where its rows come from, which columns hold its text and targets, and batches that carry them.

A run task is a `TaskSpec` (the model's side) plus a `DataSpec` (this module's side). Tasks whose `data` is the same
share one *source*: one dataset, one train / eval split, one batch for all of them (the seed's Task A, Task B and
distillation ride on the same corpus batches). Sources:

- `uci`: the UCI corpus (`--data_dir`, `--sources`, `--max_samples`, `--test_size` apply), split leak-free;
- `{train_file: …, validation_file: …}`: CSV / TSV / JSON / JSONL / Parquet (without a validation file, a
  leak-free split of the train file);
- `{stsb: folder}`: STS Benchmark sentence pairs (train from sts-train.csv, eval from sts-dev.csv);
- `{dataset: folder or name, train_split: train, eval_split: validation}`: a `datasets` dataset
  (`save_to_disk` folder, or a Hub name where the Hub is reachable).
"""

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .corpus import load_sentiment_corpus, train_test_split
from .data import NO_SOURCE, first_line, read_table
from .stsb import read_stsb, stsb_file
from .tasks import TaskSpec

TARGET_PREFIX = "target__"
DEFAULT_LABEL_COLUMNS = {"classification": "label", "multilabel": "labels", "score": "score", "regression": "label",
                         "similarity": "score"}  # fmt: skip


@dataclass
class DataSpec:
    """Where a task's examples come from (see the module docstring) and which columns hold them."""

    data: object = "uci"
    text_column: str | None = None  # default: sentence (sentence1 for STS-B)
    text_pair_column: str | None = None  # similarity only; default: sentence2
    label_column: str | None = None  # default by type: label, labels, score, label, score
    head_learning_rate: float | None = None  # this task's head LR (default: --head_learning_rate)

    def source_key(self) -> str:
        """Tasks with the same key share a source (and its batches)."""
        return json.dumps(self.data, sort_keys=True)


@dataclass
class RunTask:
    spec: TaskSpec
    data: DataSpec = field(default_factory=DataSpec)

    @classmethod
    def from_dict(cls, values: dict, where: str) -> "RunTask":
        """A `tasks:` entry of a run file: the `TaskSpec` fields plus the `DataSpec` fields."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a mapping of task fields, got {values!r}.")
        spec_fields = {f.name for f in fields(TaskSpec)}
        data_fields = {f.name for f in fields(DataSpec)}
        unknown = sorted(set(values) - spec_fields - data_fields)
        if unknown:
            raise ValueError(f"{where}: unknown task field(s) {unknown}; valid: {', '.join(sorted(spec_fields | data_fields))}.")
        spec = TaskSpec.from_dict({k: v for k, v in values.items() if k in spec_fields}, where)
        data = DataSpec(**{k: v for k, v in values.items() if k in data_fields})
        if data.head_learning_rate is not None and not spec.has_head:
            raise ValueError(f"{where}: head_learning_rate: a {spec.type} task has no head (it trains the embedding).")
        if spec.type == "similarity" and data.data == "uci":
            raise ValueError(f"{where}: a similarity task needs sentence pairs; give it data (e.g. {{stsb: path}}).")
        return cls(spec, data)

    def to_dict(self) -> dict:
        out = self.spec.to_dict()
        out.update({f.name: getattr(self.data, f.name) for f in fields(DataSpec) if getattr(self.data, f.name) is not None})
        return out


@dataclass
class Source:
    """One dataset and the tasks it feeds: raw `text` (`text_pair`), `target__<task>` columns and `domain`."""

    name: str
    tasks: list[TaskSpec]
    train: datasets.Dataset
    eval: datasets.Dataset | None
    description: str = ""


# -- loading ----------------------------------------------------------------------------------------------------------


def _raw_splits(data, data_args, seed: int) -> tuple[datasets.DatasetDict, str, str, dict]:
    """(DatasetDict(train, test?), a short name, where it came from, {split: line of its first row} for files) for
    one `data` value."""
    if data == "uci":
        corpus = load_sentiment_corpus(data_args.data_dir, data_args.sources,
                                       on_bad_lines="skip" if data_args.skip_bad_lines else "error")  # fmt: skip
        return train_test_split(corpus, data_args.split_test_size, seed, data_args.max_samples), "uci", "UCI corpus", {}
    if not isinstance(data, dict) or len({"stsb", "train_file", "dataset"} & set(data)) != 1:
        raise ValueError(f"task data {data!r}: use `uci`, {{train_file: ..., validation_file: ...}}, {{stsb: folder}} "
                         "or {dataset: folder or name}.")  # fmt: skip
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
    if train_split not in loaded:
        raise ValueError(f"dataset {location}: no split {train_split!r} (splits: {list(loaded)}).")
    out = {"train": loaded[train_split]}
    if eval_split in loaded:
        out["test"] = loaded[eval_split]
    return datasets.DatasetDict(out), Path(location).name, location, {}


def _targets(task: TaskSpec, column: list, where) -> list:
    """A task's raw label column → its targets, checked row by row; `where(row)` names the row in a message."""
    out = []
    if task.type == "classification":
        lookup = {name.lower(): i for i, name in enumerate(task.labels)} | {str(i): i for i in range(len(task.labels))}
        for row, value in enumerate(column):
            label = lookup.get(str(value).strip().lower())
            if label is None:
                raise ValueError(f"{where(row)}: label {value!r} is not one of {task.labels} (or their ids).")
            out.append(label)
    elif task.type == "multilabel":
        lookup = {name.lower(): i for i, name in enumerate(task.labels)} | {str(i): i for i in range(len(task.labels))}
        for row, values in enumerate(column):
            vector = [0.0] * len(task.labels)
            for value in values if isinstance(values, list) else str(values).split(","):
                if str(value).strip() == "":
                    continue
                label = lookup.get(str(value).strip().lower())
                if label is None:
                    raise ValueError(f"{where(row)}: label {value!r} is not one of {task.labels}.")
                vector[label] = 1.0
            out.append(vector)
    else:
        for row, value in enumerate(column):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where(row)}: {value!r} is not a number.") from None
            if task.type in ("score", "similarity") and not 0.0 <= number <= 1.0:
                raise ValueError(f"{where(row)}: {number} is outside [0, 1] (a {task.type} target).")
            out.append(number)
    return out


def _columns(dataset: datasets.Dataset, tasks: list[TaskSpec], specs: list[DataSpec], where: str,
             line_offset: int | None = None) -> datasets.Dataset:  # fmt: skip
    """`text` (`text_pair`), `domain` and one `target__<task>` column per task (distillation targets come later).
    `line_offset`: for a file, the line of its first row, so that messages name the file's line."""

    def at(row: int, column: str) -> str:
        place = f"line {row + line_offset}" if line_offset is not None else f"row {row}"
        return f"{where}, {place}, column {column!r}"

    first = specs[0]
    text = first.text_column or ("sentence1" if "sentence1" in dataset.column_names else "sentence")
    needed = [text]
    pair = None
    if any(task.type == "similarity" for task in tasks):
        pair = next((s.text_pair_column for s in specs if s.text_pair_column), None) or "sentence2"
        needed.append(pair)
    label_columns = {task.name: spec.label_column or DEFAULT_LABEL_COLUMNS.get(task.type)
                     for task, spec in zip(tasks, specs) if task.type != "distillation"}  # fmt: skip
    for column in needed + list(label_columns.values()):
        if column not in dataset.column_names:
            raise ValueError(f"{where}: no column {column!r} (columns: {dataset.column_names}); set text_column / "
                             "text_pair_column / label_column on the task.")  # fmt: skip
    columns = {"text": [str(t) if t is not None else "" for t in dataset[text]]}
    for row, sentence in enumerate(columns["text"]):
        if not sentence.strip():
            raise ValueError(f"{at(row, text)}: empty text; every row needs text.")
    if pair:
        columns["text_pair"] = [str(t) for t in dataset[pair]]
    # The corpus's `source` (amazon / imdb / yelp ids) gives per-domain metrics; other data has none.
    has_domain = "source" in dataset.column_names and dataset.features["source"].dtype in ("int64", "int32")
    columns["domain"] = list(dataset["source"]) if has_domain else [NO_SOURCE] * dataset.num_rows
    for task in tasks:
        if task.name in label_columns:
            column = label_columns[task.name]
            columns[TARGET_PREFIX + task.name] = _targets(task, list(dataset[column]), lambda row, c=column: at(row, c))
    return datasets.Dataset.from_dict(columns)


def build_sources(run_tasks: list[RunTask], data_args, seed: int, default_splits=None) -> list[Source]:
    """Group the tasks by their data, load each source once, and give it its columns.

    `default_splits`: an already loaded DatasetDict for the seed's run (the corpus or --train_file, in the
    `(sentence, label, score, source)` layout), used for the tasks whose data is `uci`.
    """
    groups: dict[str, list[RunTask]] = {}
    for task in run_tasks:
        groups.setdefault(task.data.source_key(), []).append(task)
    sources = []
    for members in groups.values():
        data = members[0].data.data
        if data == "uci" and default_splits is not None:
            splits, name, where, lines = default_splits, "uci", "the run's data", {}
        else:
            splits, name, where, lines = _raw_splits(data, data_args, seed)
        tasks, specs = [m.spec for m in members], [m.data for m in members]
        train = _columns(splits["train"], tasks, specs, f"{where} (train)", lines.get("train"))
        evaluation = _columns(splits["test"], tasks, specs, f"{where} (eval)", lines.get("test")) if "test" in splits else None
        if evaluation is None:  # no eval data of its own: a leak-free split, stratified by the first class task
            stratify = next((TARGET_PREFIX + t.name for t in tasks if t.type == "classification"), None)
            split = train_test_split(train, data_args.split_test_size, seed, text_column="text", label_column=stratify)
            train, evaluation = split["train"], split["test"]
        sources.append(Source(name, tasks, train, evaluation, where))
    taken = {}
    for source in sources:  # two sources from different files with the same stem stay apart
        taken[source.name] = taken.get(source.name, 0) + 1
        if taken[source.name] > 1:
            source.name = f"{source.name}{taken[source.name]}"
    return sources


def add_teacher_targets(sources: list[Source], teacher) -> None:
    """Distillation targets: the starting encoder's pooled vector of every sentence, computed once before training
    (`teacher(sentences) -> np.ndarray`), so no second encoder runs per step."""
    for source in sources:
        for task in source.tasks:
            if task.type == "distillation":
                for split in ("train", "eval"):
                    dataset = getattr(source, split)
                    if dataset is not None:
                        vectors = teacher(list(dataset["text"]))
                        setattr(source, split, dataset.add_column(TARGET_PREFIX + task.name, vectors.tolist()))


# -- batches ----------------------------------------------------------------------------------------------------------


def tokenize_source(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """`text` (and `text_pair`) → input_ids, attention_mask (…) and pair_input_ids, …; targets and domain kept."""

    def tokenize(batch):
        encoded = dict(tokenizer(batch["text"], truncation=True, max_length=max_length))
        if "text_pair" in batch:
            pair = tokenizer(batch["text_pair"], truncation=True, max_length=max_length)
            encoded.update({f"pair_{key}": value for key, value in pair.items()})
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=[c for c in ("text", "text_pair") if c in dataset.column_names],
                       desc="Tokenising")  # fmt: skip


class MultiSourceDataset(torch.utils.data.Dataset):
    """The sources' tokenized train sets one after another; `TaskBatchSampler` keeps each batch within one."""

    def __init__(self, parts: list[datasets.Dataset]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][int(index - self.offsets[k])]

    def lengths(self) -> list[list[int]]:
        return [[len(ids) for ids in part["input_ids"]] for part in self.parts]


class MultiTaskCollator:
    """Rows of one source → a batch: padded inputs (and pair inputs), `task_labels` by task, `domain`."""

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tasks: list[TaskSpec]):
        self.tokenizer = tokenizer
        self.types = {task.name: task.type for task in tasks}

    def __call__(self, rows: list[dict]) -> dict:
        batch = dict(self.tokenizer.pad([{k: row[k] for k in self.INPUTS if k in row} for row in rows], return_tensors="pt"))
        if "pair_input_ids" in rows[0]:
            pair = self.tokenizer.pad([{k: row[f"pair_{k}"] for k in self.INPUTS if f"pair_{k}" in row} for row in rows],
                                      return_tensors="pt")  # fmt: skip
            batch.update({f"pair_{key}": value for key, value in pair.items()})
        labels = {}
        for key in rows[0]:
            if key.startswith(TARGET_PREFIX):
                name = key[len(TARGET_PREFIX):]
                dtype = torch.long if self.types[name] == "classification" else torch.float32
                labels[name] = torch.tensor([row[key] for row in rows], dtype=dtype)
        batch["task_labels"] = labels
        batch["domain"] = torch.tensor([row.get("domain", NO_SOURCE) for row in rows], dtype=torch.long)
        return batch
