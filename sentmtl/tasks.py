"""Tasks, the unit a multi-task model is built from: a name, a type, its labels, its loss and its weight.

The model config stores the list (`SentMtlConfig.tasks`), so `from_pretrained` rebuilds every head and each task owns
its label names. Where a task's *data* comes from is a run's business (`sentmtl.task_data`), not the model's.

| type           | head                    | target per example                 | default loss (others)                      |
| -------------- | ----------------------- | ---------------------------------- | ------------------------------------------ |
| classification | Linear(d → K)           | class id (-100: absent)            | cross_entropy                              |
| multilabel     | Linear(d → K)           | K values in {0, 1} (NaN: absent)   | bce                                        |
| score          | Linear(d → 1), sigmoid  | a value in [0, 1] (NaN: absent)    | bce (on the logit; mse on the sigmoid)     |
| regression     | Linear(d → 1)           | any real value (NaN: absent)       | mse                                        |
| similarity     | none: the embedding     | a pair's score in [0, 1]           | cosent (cosine_mse)                        |
| distillation   | none: the embedding     | the starting encoder's embedding   | relational (cosine)                        |
"""

from dataclasses import asdict, dataclass, fields

TASK_TYPES = ("classification", "multilabel", "score", "regression", "similarity", "distillation")
LOSSES = {
    "classification": ("cross_entropy",),
    "multilabel": ("bce",),
    "score": ("bce", "mse"),
    "regression": ("mse",),
    "similarity": ("cosent", "cosine_mse"),
    "distillation": ("relational", "cosine"),
}
# Types whose head reads the embedding; the other two train the embedding itself.
HEADED_TYPES = ("classification", "multilabel", "score", "regression")
# The seed's two tasks keep their names: checkpoints name their heads `classification_head`, `sentiment_head`.
DEFAULT_CLASSIFICATION, DEFAULT_SCORE = "classification", "sentiment"


@dataclass
class TaskSpec:
    """One task of the model. Stored as a plain dict in `SentMtlConfig.tasks` (config.json)."""

    name: str  # an identifier: the head is the model's `<name>_head`, metrics are `eval_<name>_<metric>`
    type: str  # one of TASK_TYPES
    labels: list[str] | None = None  # class / label names in id order (classification, multilabel)
    loss: str | None = None  # one of LOSSES[type]; None: the type's default (the first)
    loss_weight: float = 1.0  # this task's term in the summed loss (unused under uncertainty weighting)
    label_smoothing: float = 0.0  # classification only

    def __post_init__(self):
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be an identifier (letters, digits, _): it names a head.")
        if self.type not in TASK_TYPES:
            raise ValueError(f"{where}: type {self.type!r} is not supported; choose one of {', '.join(TASK_TYPES)}.")
        if self.type in ("classification", "multilabel"):
            minimum = 2 if self.type == "classification" else 1
            if not self.labels or len(self.labels) < minimum or len(set(self.labels)) != len(self.labels):
                raise ValueError(f"{where}: a {self.type} task needs {minimum}+ distinct label names, got {self.labels}.")
            self.labels = [str(label) for label in self.labels]
        elif self.labels is not None:
            raise ValueError(f"{where}: a {self.type} task takes no labels (got {self.labels}).")
        self.loss = self.loss or LOSSES[self.type][0]
        if self.loss not in LOSSES[self.type]:
            raise ValueError(f"{where}: loss {self.loss!r} does not fit a {self.type} task; choose one of "
                             f"{', '.join(LOSSES[self.type])}.")  # fmt: skip
        if not self.loss_weight >= 0:
            raise ValueError(f"{where}: loss_weight {self.loss_weight!r} must be >= 0.")
        if not 0.0 <= self.label_smoothing < 1.0 or (self.label_smoothing and self.type != "classification"):
            raise ValueError(f"{where}: label_smoothing {self.label_smoothing!r} must be in [0, 1), classification only.")

    @classmethod
    def from_dict(cls, values: dict, where: str = "task") -> "TaskSpec":
        """From config.json or a run file; an unknown field is an error that lists the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown task field(s) {unknown}; valid: {', '.join(valid)}.")
        missing = [name for name in ("name", "type") if name not in values]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (every task needs a name and a type).")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def has_head(self) -> bool:
        return self.type in HEADED_TYPES

    @property
    def head_size(self) -> int:
        return len(self.labels) if self.type in ("classification", "multilabel") else 1

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels or ()))


def default_tasks(class_names=("negative", "positive"), classification_loss_weight=1.0, sentiment_loss_weight=1.0,
                  label_smoothing=0.0, distillation_weight=0.0) -> list[TaskSpec]:  # fmt: skip
    """The seed's model: Task A (`classification`) and Task B (`sentiment`, a score in [0, 1]), and, when
    `distillation_weight` > 0, a `distillation` task that keeps the embedding's similarity structure."""
    tasks = [
        TaskSpec(DEFAULT_CLASSIFICATION, "classification", labels=list(class_names),
                 loss_weight=classification_loss_weight, label_smoothing=label_smoothing),
        TaskSpec(DEFAULT_SCORE, "score", loss_weight=sentiment_loss_weight),
    ]  # fmt: skip
    if distillation_weight:
        tasks.append(TaskSpec("distillation", "distillation", loss_weight=distillation_weight))
    return tasks


def check_unique_names(tasks: list[TaskSpec]) -> None:
    names = [task.name for task in tasks]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"task names must be unique; {duplicated} appear more than once.")
    if not tasks:
        raise ValueError("a model needs at least one task.")


__all__ = ["TaskSpec", "TASK_TYPES", "LOSSES", "HEADED_TYPES", "default_tasks", "check_unique_names"]
