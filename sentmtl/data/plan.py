"""A run's tasks: each a `TaskSpec` (the model's side) and a `DataSpec` (where its rows come from).

They come from a run file's `tasks:` list, or from the seed's flags (`--class_names`, `--train_file`, `--max_samples`,
the loss weights, `--distillation_weight`, `--label_smoothing_factor` …), turned into the same task definitions once,
at argument time. After that there is one way data is loaded, split, tokenised, sampled and collated. A flag that a
`tasks:` list would leave unused is refused, naming where its value belongs instead.
"""

import json
from dataclasses import MISSING, InitVar, dataclass, field, fields

from ..model.task_spec import DEFAULT_CLASSIFICATION, DEFAULT_SCORE, TaskSpec, check_unique_names, default_tasks
from ..tasks.io import option_owners, task_io
from .corpus import SOURCES

# The keys a task's `data:` mapping may have, by kind of source (see sentmtl/data/sources.py).
DATA_KEYS = {
    "train_file": ("train_file", "validation_file", "streaming"),
    "stsb": ("stsb",),
    "dataset": ("dataset", "train_split", "eval_split", "streaming"),
}


@dataclass
class DataSpec:
    """Where a task's examples come from (`uci`, `{train_file, validation_file}`, `{stsb}`, `{dataset}`), which
    columns hold them and how the source is sampled. Options of one task type (a contrastive task's negatives, a
    distillation task's teacher …) are that type's (`TaskIO.options`), kept on the `RunTask`. Tasks with the same
    data *and* the same text columns share a source (and its batches)."""

    data: object = "uci"
    text_column: str | None = None  # default: sentence (sentence1 for STS-B)
    text_pair_column: str | None = None  # pair tasks only; default: sentence2
    label_column: str | None = None  # default: the type's (label, labels, score, …)
    max_samples: int | None = None  # a stratified subset of this many distinct sentences, before the split
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

    def key_parts(self) -> list:
        """What decides the rows of a source (data, text columns, subset) and how they are batched."""
        return [
            self.data,
            self.text_column,
            self.text_pair_column,
            self.max_samples,
            self.batch_size,
            self.batches_per_epoch,
        ]


@dataclass
class RunTask:
    """One task of a run: the model's side (`spec`), where its rows come from (`data`), the data options of its
    type's own (`options`, checked by the type: `TaskIO.options`) and its head's learning rate (None: the run's
    --head_learning_rate)."""

    spec: TaskSpec
    data: DataSpec = field(default_factory=DataSpec)
    options: dict = field(default_factory=dict)
    head_learning_rate: float | None = None
    where: InitVar[str] = ""  # how errors name the task (a run file's `tasks[i]`)

    def __post_init__(self, where):
        self.check(where or f"task {self.spec.name!r}")

    def check(self, where: str) -> None:
        io = task_io(self.spec)
        for name, value in self.options.items():
            if name not in io.options:
                owners = option_owners(name)
                raise ValueError(
                    f"{where}: {name}: only for {' or '.join(owners) or 'no'} tasks (a {self.spec.type} task "
                    f"takes {', '.join(sorted(io.options)) or 'no data option of its own'})."
                )
            try:
                io.options[name].check(value)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        if self.head_learning_rate is not None and not self.spec.has_head:
            raise ValueError(
                f"{where}: head_learning_rate: a {self.spec.type} task has no head (it trains the embedding)."
            )
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ValueError(
                f"{where}: head_learning_rate {self.head_learning_rate} must be > 0 (to keep a head "
                "fixed, --freeze <task>_head)."
            )
        if self.spec.kind.pairs and self.data.data == "uci":
            raise ValueError(
                f"{where}: a {self.spec.type} task needs sentence pairs; give it data (e.g. {{stsb: path}})."
            )
        io.check_data(self, where)

    @classmethod
    def from_dict(cls, values: dict, where: str) -> "RunTask":
        """A `tasks:` entry of a run file: the `TaskSpec` fields, the `DataSpec` fields, `head_learning_rate` and the
        data options of the task's type, all at one level."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a mapping of task fields, got {values!r}.")
        spec_fields = {f.name for f in fields(TaskSpec)}
        data_fields = {f.name for f in fields(DataSpec)}
        known = spec_fields | data_fields | {"head_learning_rate"}
        unknown = sorted(k for k in set(values) - known if not option_owners(k))
        if unknown:
            raise ValueError(
                f"{where}: unknown task field(s) {unknown}; valid: {', '.join(sorted(known))}, and a task type's "
                "own data options (docs/tasks.md)."
            )
        spec = TaskSpec.from_dict({k: v for k, v in values.items() if k in spec_fields}, where)
        try:
            data = DataSpec(**{k: v for k, v in values.items() if k in data_fields})
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        options = {k: v for k, v in values.items() if k not in known and v is not None}
        return cls(spec, data, options, values.get("head_learning_rate"), where)

    def to_dict(self) -> dict:
        """The `tasks:` entry this task replays from (`from_dict`'s input)."""
        out = self.spec.to_dict()
        out.update(
            {f.name: getattr(self.data, f.name) for f in fields(DataSpec) if getattr(self.data, f.name) is not None}
        )
        if self.head_learning_rate is not None:
            out["head_learning_rate"] = self.head_learning_rate
        out.update(self.options)
        return out

    def source_key(self) -> str:
        """Tasks with the same key share one source: the same rows (data, text columns, subset, and the type options
        that change rows: a filter, documents, negatives), batched the same way."""
        io = task_io(self.spec)
        shaping = {name: value for name, value in self.options.items() if io.options[name].shapes_rows}
        return json.dumps([*self.data.key_parts(), shaping], sort_keys=True)


def changed(arguments, names) -> list[str]:
    """The names among `names` whose value differs from its field's default in the arguments' dataclass: the
    defaults live in one place, the argument definitions (`sentmtl.training.arguments`)."""
    defaults = {}
    for f in fields(arguments):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return [name for name in names if getattr(arguments, name) != defaults[name]]


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
                ),
                {"score_from": DEFAULT_CLASSIFICATION} if spec.name == DEFAULT_SCORE else {},
            )
            for spec in specs
        ]
    file_only = [f"--{name}" for name in changed(data_args, ("text_column", "label_column", "score_column"))]
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
    ignored = changed(data_args, ("train_file", "validation_file", "class_names", "label_column", "score_column"))
    ignored += changed(data_args, ("text_column",))
    ignored += changed(model_args, ("classification_loss_weight", "sentiment_loss_weight", "distillation_weight"))
    ignored += changed(training_args, ("label_smoothing_factor",))
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
        corpus_only = changed(data_args, ("data_dir", "sources", "max_samples", "skip_bad_lines"))
        if corpus_only:
            raise ValueError(
                f"{where}: no task reads the UCI corpus (data: uci), so --{', --'.join(corpus_only)} "
                "would be ignored. Drop them."
            )
    return run_tasks


__all__ = ["DATA_KEYS", "DataSpec", "RunTask", "SOURCES", "tasks_from_file", "tasks_from_flags"]
