"""Tasks, the unit a multi-task model is built from: a name, a type, its labels, its loss (and its scale) and its weight.

The model config stores the list (`SentMtlConfig.tasks`), so `from_pretrained` rebuilds every head and each task owns
its label names. What a type *does* is its `TaskType`'s business (`sentmtl.model.task_types`); where a task's data comes
from is a run's (`sentmtl.data.sources`), not the model's.
"""

from dataclasses import asdict, dataclass, fields

from .prompts import task_prompt_names
from .task_types import TASK_TYPES, task_type

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
    scale: float | None = None  # the multiplier of the cosines (CoSENT, in-batch negatives); None: the default, 20
    # Under the model's `matryoshka_dims`: whether this task's embedding loss is also taken on the truncated prefixes
    # (False: on the full embedding only, e.g. a distillation that should keep the full size close to its teacher).
    matryoshka: bool = True
    # The prompt its texts take (`sentmtl.model.prompts`): a prompt name for every text its type reads, or
    # {role: name} (roles: text, text_pair, negatives); None: the model's default prompt.
    prompt: str | dict | None = None

    def __post_init__(self):
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be an identifier (letters, digits, _): it names a head.")
        if self.type not in TASK_TYPES:
            raise ValueError(f"{where}: type {self.type!r} is not supported; choose one of {', '.join(TASK_TYPES)}.")
        kind = task_type(self.type)
        if kind.min_labels is not None:
            labels = [str(label).strip() for label in self.labels or ()]
            if len(labels) < kind.min_labels or len(set(labels)) != len(labels) or "" in labels:
                raise ValueError(
                    f"{where}: a {self.type} task needs {kind.min_labels}+ distinct label names (non-empty), "
                    f"got {self.labels}."
                )
            self.labels = labels
        elif self.labels is not None:
            raise ValueError(f"{where}: a {self.type} task takes no labels (got {self.labels}).")
        self.loss = self.loss or kind.losses[0]
        if self.loss not in kind.losses:
            raise ValueError(
                f"{where}: loss {self.loss!r} does not fit a {self.type} task; choose one of {', '.join(kind.losses)}."
            )
        if not self.loss_weight >= 0:
            raise ValueError(f"{where}: loss_weight {self.loss_weight!r} must be >= 0.")
        if not 0.0 <= self.label_smoothing < 1.0 or (self.label_smoothing and not kind.label_smoothing):
            types = ", ".join(name for name, t in TASK_TYPES.items() if t.label_smoothing)
            raise ValueError(
                f"{where}: label_smoothing {self.label_smoothing!r} must be in [0, 1), and only {types} tasks take one."
            )
        if not isinstance(self.matryoshka, bool):
            raise ValueError(f"{where}: matryoshka {self.matryoshka!r} must be true or false.")
        if not self.matryoshka and self.loss not in kind.prefix_losses + kind.prefix_refused:
            takes = [
                f"{name} ({', '.join(t.prefix_losses + t.prefix_refused)})"
                for name, t in TASK_TYPES.items()
                if t.prefix_losses or t.prefix_refused
            ]
            raise ValueError(
                f"{where}: matryoshka: false has nothing to switch off (loss {self.loss!r} does not act on "
                f"the embedding); only these losses take it: {'; '.join(takes)}."
            )
        if self.scale is not None and (self.loss not in kind.scale_losses or not 0 < self.scale < float("inf")):
            takes = [f"{name} ({', '.join(t.scale_losses)})" for name, t in TASK_TYPES.items() if t.scale_losses]
            raise ValueError(
                f"{where}: scale {self.scale!r} must be > 0, and only these losses take one: {'; '.join(takes)}."
            )
        task_prompt_names(self.prompt, kind.text_roles, where)

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
        out = asdict(self)
        if out["scale"] is None:  # configs stay as they were for every task that does not set one
            del out["scale"]
        if out["matryoshka"]:  # the default: left out for the same reason
            del out["matryoshka"]
        if out["prompt"] is None:
            del out["prompt"]
        return out

    @property
    def prompt_names(self) -> dict[str, str]:
        """{role: prompt name} for the texts whose prompt this task names (the others take the default)."""
        return task_prompt_names(self.prompt, self.kind.text_roles, f"task {self.name!r}")

    @property
    def kind(self):
        """This task's `TaskType` (what its head is and how its loss is computed)."""
        return task_type(self.type)

    @property
    def on_prefixes(self) -> bool:
        """Whether, under the model's `matryoshka_dims`, this task's loss is also taken on the truncated prefixes."""
        return self.matryoshka and self.loss in self.kind.prefix_losses

    @property
    def has_head(self) -> bool:
        return self.kind.has_head

    @property
    def head_size(self) -> int:
        return self.kind.head_size(self)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels or ()))


def default_tasks(
    class_names=("negative", "positive"),
    classification_loss_weight=1.0,
    sentiment_loss_weight=1.0,
    label_smoothing=0.0,
    distillation_weight=0.0,
) -> list[TaskSpec]:
    """The seed's model: Task A (`classification`) and Task B (`sentiment`, a score in [0, 1]), and, when
    `distillation_weight` > 0, a `distillation` task that keeps the embedding's similarity structure."""
    tasks = [
        TaskSpec(
            DEFAULT_CLASSIFICATION,
            "classification",
            labels=list(class_names),
            loss_weight=classification_loss_weight,
            label_smoothing=label_smoothing,
        ),
        TaskSpec(DEFAULT_SCORE, "score", loss_weight=sentiment_loss_weight),
    ]
    if distillation_weight:
        tasks.append(TaskSpec("distillation", "distillation", loss_weight=distillation_weight))
    return tasks


def first_task(tasks: list[TaskSpec], type_name: str) -> TaskSpec | None:
    """The first task of a type: the seed's documented names (`logits`, `sentiment_scores`, `id2label`) are the
    first classification and the first score task's."""
    return next((task for task in tasks if task.type == type_name), None)


def check_unique_names(tasks: list[TaskSpec]) -> None:
    names = [task.name for task in tasks]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"task names must be unique; {duplicated} appear more than once.")
    if not tasks:
        raise ValueError("a model needs at least one task.")


__all__ = ["TaskSpec", "default_tasks", "check_unique_names", "first_task"]
