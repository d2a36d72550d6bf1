"""A run's tasks: each a `TaskSpec` (the model's side) and a `DataSpec` (where its rows come from).

They come from a run file's `tasks:` list, or from the seed's flags (`--class_names`, `--train_file`, `--max_samples`,
the loss weights, `--distillation_weight`, `--label_smoothing_factor` …), turned into the same task definitions once,
at argument time. After that there is one way data is loaded, split, tokenised, sampled and collated. A flag that a
`tasks:` list would leave unused is refused, naming where its value belongs instead.
"""

import json
import math
from dataclasses import dataclass, field, fields

from ..model.task_spec import DEFAULT_CLASSIFICATION, DEFAULT_SCORE, TaskSpec, check_unique_names, default_tasks
from ..tasks.io import task_io
from .corpus import LABEL_NAMES, SOURCES

# The keys a task's `data:` mapping may have, by kind of source (see sentmtl/data/sources.py).
DATA_KEYS = {
    "train_file": ("train_file", "validation_file", "streaming"),
    "stsb": ("stsb",),
    "dataset": ("dataset", "train_split", "eval_split", "streaming"),
}


@dataclass
class DataSpec:
    """Where a task's examples come from (`uci`, `{train_file, validation_file}`, `{stsb}`, `{dataset}`) and which
    columns hold them. Tasks with the same data *and* the same text columns share a source (and its batches)."""

    data: object = "uci"
    text_column: str | None = None  # default: sentence (sentence1 for STS-B)
    text_pair_column: str | None = None  # pair tasks only; default: sentence2
    label_column: str | None = None  # default: the type's (label, labels, score, …)
    head_learning_rate: float | None = None  # this task's head LR (default: --head_learning_rate)
    max_samples: int | None = None  # a stratified subset of this many distinct sentences, before the split
    # A score task whose column is missing from the data takes this classification task's class id / (K − 1): the
    # seed's --train_file without a score column (negative → 0.0, positive → 1.0).
    score_from: str | None = None
    # Distillation: the teacher whose pooled vectors are the targets — a model name or path; unset: the model as
    # this run starts (for a continued run, the checkpoint's encoder, not the original one).
    teacher: str | None = None
    # Contrastive: columns of hard negatives (one text each, every row filled); rows whose score (label_column,
    # default `score`) is below min_score are not pairs (training drops them; evaluation keeps their second text as a
    # retrieval document); distractors: more documents for the evaluation's second, harder corpus —
    # {stsb: folder} (every sentence of its train split) or {file: path, columns: [...]}.
    negative_columns: list | None = None
    min_score: float | None = None
    distractors: dict | None = None
    # Sampling of this source: its own batch size (per device; default --per_device_train_batch_size), and a fixed
    # number of batches per epoch placed among the other sources' (default: what --task_sampling gives it).
    batch_size: int | None = None
    batches_per_epoch: int | None = None

    def __post_init__(self):
        data = self.data
        if data != "uci":
            kinds = [kind for kind in DATA_KEYS if isinstance(data, dict) and kind in data]
            if len(kinds) != 1:
                raise ValueError(
                    f"task data {data!r}: use `uci`, {{train_file: ..., validation_file: ...}}, "
                    "{stsb: folder} or {dataset: folder or name, train_split, eval_split}."
                )
            unknown = sorted(set(data) - set(DATA_KEYS[kinds[0]]))
            if unknown:
                raise ValueError(
                    f"task data {data!r}: unknown key(s) {unknown}; a {kinds[0]} source takes "
                    f"{', '.join(DATA_KEYS[kinds[0]])}."
                )
        if self.negative_columns is not None and (
            not isinstance(self.negative_columns, list)
            or not self.negative_columns
            or not all(isinstance(c, str) for c in self.negative_columns)
        ):
            raise ValueError(f"negative_columns {self.negative_columns!r}: a list of column names.")
        if self.distractors is not None:
            ok = isinstance(self.distractors, dict) and (
                set(self.distractors) == {"stsb"}
                or ("file" in self.distractors and set(self.distractors) <= {"file", "columns"})
            )
            if not ok:
                raise ValueError(
                    f"distractors {self.distractors!r}: use {{stsb: folder}} or {{file: path, columns: "
                    "[...]} (columns default to the task's text columns)."
                )
            columns = self.distractors.get("columns")
            if columns is not None and (
                not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
            ):
                raise ValueError(
                    f"distractors columns {columns!r}: a non-empty list of column names (or leave it out)."
                )
        if self.min_score is not None and (
            isinstance(self.min_score, bool)
            or not isinstance(self.min_score, (int, float))
            or not math.isfinite(self.min_score)
        ):
            raise ValueError(f"min_score {self.min_score!r} must be a number (on the score column's scale).")
        for name in ("batch_size", "batches_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} {value!r} must be a positive integer.")
        if self.max_samples is not None and (self.max_samples < 2 or self.has_eval_split):
            raise ValueError(
                f"max_samples {self.max_samples}: must be at least 2, and only for data that is split "
                "(not with a validation file, STS-B or a dataset's eval split: trim those instead)."
            )
        if isinstance(data, dict) and "streaming" in data:
            if not isinstance(data["streaming"], bool):
                raise ValueError(f"task data {data!r}: streaming is true or false.")
            if data["streaming"] and not self.has_eval_split:
                raise ValueError(
                    f"task data {data!r}: a streamed source is read once, in order, and never split "
                    "(a leak-free split needs every row first): give it evaluation data of its own "
                    "(validation_file, or a dataset's eval_split)."
                )
            if data["streaming"] and self.batches_per_epoch is not None:
                raise ValueError(
                    f"task data {data!r}: a stream has no epochs to place batches in; drop "
                    "batches_per_epoch (--max_steps sets the length of the run)."
                )
            if data["streaming"] and self.batch_size is not None:
                raise ValueError(
                    f"task data {data!r}: a streamed source is the run's only one, batched by "
                    "--per_device_train_batch_size; drop its batch_size."
                )

    @property
    def streamed(self) -> bool:
        """Read as a `datasets` stream (`IterableDataset`): rows arrive in order, through a seeded shuffle buffer."""
        return isinstance(self.data, dict) and bool(self.data.get("streaming"))

    @property
    def has_eval_split(self) -> bool:
        data = self.data if isinstance(self.data, dict) else {}
        return bool(data.get("validation_file") or "stsb" in data or data.get("eval_split"))

    def source_key(self) -> str:
        """Tasks with the same key share one source: the same rows (data, text columns, subset, filter, documents),
        batched the same way."""
        return json.dumps(
            [
                self.data,
                self.text_column,
                self.text_pair_column,
                self.max_samples,
                self.negative_columns,
                self.min_score,
                self.distractors,
                self.batch_size,
                self.batches_per_epoch,
            ],
            sort_keys=True,
        )


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
            raise ValueError(
                f"{where}: unknown task field(s) {unknown}; valid: {', '.join(sorted(spec_fields | data_fields))}."
            )
        spec = TaskSpec.from_dict({k: v for k, v in values.items() if k in spec_fields}, where)
        try:
            data = DataSpec(**{k: v for k, v in values.items() if k in data_fields})
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if data.head_learning_rate is not None and not spec.has_head:
            raise ValueError(f"{where}: head_learning_rate: a {spec.type} task has no head (it trains the embedding).")
        if data.head_learning_rate is not None and not data.head_learning_rate > 0:
            raise ValueError(
                f"{where}: head_learning_rate {data.head_learning_rate} must be > 0 (to keep a head "
                "fixed, --freeze <task>_head)."
            )
        if spec.kind.pairs and data.data == "uci":
            raise ValueError(f"{where}: a {spec.type} task needs sentence pairs; give it data (e.g. {{stsb: path}}).")
        if data.teacher is not None and not task_io(spec).teacher_targets:
            raise ValueError(f"{where}: teacher is for distillation tasks only.")
        if data.streamed and task_io(spec).distinct_in_batch:
            raise ValueError(
                f"{where}: a {spec.type} task numbers the distinct texts of its whole table and keeps "
                "repeats out of a batch; a stream has no whole table. Give it a file without streaming."
            )
        if data.max_samples is not None and task_io(spec).from_texts:
            raise ValueError(
                f"{where}: max_samples would cut pairs that share a text apart (a subset keeps whole groups "
                "of near-duplicates, not rows); give a smaller file instead."
            )
        retrieval = [
            name for name in ("negative_columns", "min_score", "distractors") if getattr(data, name) is not None
        ]
        if retrieval and not task_io(spec).from_texts:
            raise ValueError(
                f"{where}: {', '.join(retrieval)}: only for contrastive tasks (a {spec.type} task's rows "
                "are not retrieval pairs)."
            )
        return cls(spec, data)

    def to_dict(self) -> dict:
        out = self.spec.to_dict()
        out.update(
            {f.name: getattr(self.data, f.name) for f in fields(DataSpec) if getattr(self.data, f.name) is not None}
        )
        return out


def tasks_from_flags(model_args, data_args, training_args) -> list[RunTask]:
    """The seed's run from its flags: Task A (`classification`) and Task B (`sentiment`), and the `distillation`
    task unless its weight is 0, all on one data — the corpus, or --train_file / --validation_file."""
    specs = default_tasks(
        data_args.class_names,
        model_args.classification_loss_weight,
        model_args.sentiment_loss_weight,
        training_args.label_smoothing_factor,
        model_args.distillation_weight,
    )
    if data_args.train_file:
        files = {"train_file": data_args.train_file}
        if data_args.validation_file:
            files["validation_file"] = data_args.validation_file
        columns = {DEFAULT_CLASSIFICATION: data_args.label_column, DEFAULT_SCORE: data_args.score_column}
        return [
            RunTask(
                spec,
                DataSpec(
                    files,
                    text_column=data_args.text_column,
                    label_column=columns.get(spec.name),
                    max_samples=data_args.max_samples,
                    score_from=DEFAULT_CLASSIFICATION if spec.name == DEFAULT_SCORE else None,
                ),
            )
            for spec in specs
        ]
    file_only = [
        f"--{name}"
        for name, default in (("text_column", "sentence"), ("label_column", "label"), ("score_column", "score"))
        if getattr(data_args, name) != default
    ]
    if file_only:
        raise ValueError(
            f"{', '.join(file_only)} name(s) columns of --train_file; the corpus has its own "
            "(sentence, label, score). Drop them, or give --train_file."
        )
    return [RunTask(spec, DataSpec("uci", max_samples=data_args.max_samples)) for spec in specs]


def tasks_from_file(tasks, model_args, data_args, training_args, where: str) -> list[RunTask]:
    """A run file's `tasks:` list. The flags that would shape the seed's tasks are refused: each task names its own
    data, labels, weight, subset and smoothing."""
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{where}: `tasks` must be a non-empty list of task mappings.")
    run_tasks = [RunTask.from_dict(task, f"{where}: tasks[{i}]") for i, task in enumerate(tasks)]
    check_unique_names([task.spec for task in run_tasks])
    ignored = [name for name in ("train_file", "validation_file") if getattr(data_args, name)]
    ignored += [
        name
        for name, default in (
            ("class_names", list(LABEL_NAMES)),
            ("label_column", "label"),
            ("score_column", "score"),
            ("text_column", "sentence"),
        )
        if getattr(data_args, name) != default
    ]
    ignored += [
        name
        for name, default in (
            ("classification_loss_weight", 1.0),
            ("sentiment_loss_weight", 1.0),
            ("distillation_weight", 10.0),
        )
        if getattr(model_args, name) != default
    ]
    ignored += ["label_smoothing_factor"] if training_args.label_smoothing_factor else []
    if ignored:
        raise ValueError(
            f"{where}: with `tasks:` each task names its own data, labels, weight and label_smoothing; "
            f"--{', --'.join(ignored)} would be ignored. Move them into the tasks."
        )
    corpus_tasks = [task for task in run_tasks if task.data.data == "uci"]
    if data_args.max_samples is not None:
        # Like --data_dir and --sources, --max_samples is about the corpus: it subsets the `uci` tasks' source.
        for task in corpus_tasks:
            if task.data.max_samples not in (None, data_args.max_samples):
                raise ValueError(
                    f"{where}: task {task.spec.name!r} sets max_samples {task.data.max_samples}, "
                    f"--max_samples says {data_args.max_samples}: keep one."
                )
            task.data.max_samples = data_args.max_samples
    if not corpus_tasks:
        corpus_only = [name for name in ("data_dir", "sources", "max_samples") if getattr(data_args, name) is not None]
        corpus_only += ["skip_bad_lines"] if data_args.skip_bad_lines else []
        if corpus_only:
            raise ValueError(
                f"{where}: no task reads the UCI corpus (data: uci), so --{', --'.join(corpus_only)} "
                "would be ignored. Drop them."
            )
    return run_tasks


__all__ = ["DATA_KEYS", "DataSpec", "RunTask", "SOURCES", "tasks_from_file", "tasks_from_flags"]
