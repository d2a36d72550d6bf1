"""Task types, run half: how a type reads its targets from data, measures them, and shows them in the report and card.

Registered under the same names as the model half (`sentmtl.model.task_types`); scikit-learn and scipy are allowed here,
since this half never travels beside the weights. A new task type is a `TaskType` plus a `TaskIO` (docs/design.md).

A type owns its data, not only its targets: the data options of its own that a `tasks:` entry may set (`options`,
each checked by the type), and its row protocol — which column it reads (`column`), whether a given table feeds it
(`present`), what it computes rather than reads (`teacher`), which rows train (`training_rows`), what a training
batch must not repeat (`batch_keys`), whether it stratifies a split (`stratify_by`). The data layer
(`sentmtl.data.sources`, `sentmtl.data.plan`, `sentmtl.data.batching`) asks these and never branches on a type. The
built-in types' run halves are in `sentmtl.tasks.builtin`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from .labels import LabelMap, is_absent, metric_label  # noqa: F401 (LabelMap, metric_label: their 0.3.0.dev0 place)

DEFAULT_TEXT_PAIR_COLUMN = "sentence2"  # a pair's second text, when a task names no text_pair_column


@dataclass(frozen=True)
class DataOption:
    """A data field a task type adds to its `tasks:` entries, beside `DataSpec`'s location, columns and sampling.
    `check(value)` raises a ValueError saying what would be accepted; `shapes_rows`: the option changes the
    source's rows (tasks share a source only when such options agree)."""

    check: Callable[[object], None]
    help: str
    shapes_rows: bool = False


@dataclass(frozen=True)
class TeacherRequest:
    """Targets the run computes with a teacher encoder: `name` a model name or path; None the model as the run
    starts (for a continued run, the checkpoint's encoder)."""

    name: str | None


@dataclass(frozen=True)
class MiningRequest:
    """Hard negatives the run mines for a task's training rows (`sentmtl.data.mining`): `settings` a
    `tasks.mining_settings.MiningSettings` (`settings.miner` None: the model as the run starts), `corpus` more
    candidate documents besides the rows' positives."""

    settings: object
    corpus: list[str]


class Readers(NamedTuple):
    """What the data layer lends a type that reads files of its own (a contrastive task's distractors): `table(path)`
    a `datasets.Dataset` of a CSV / TSV / JSON / Parquet file, `stsb_texts(folder)` every sentence of STS-B's train
    split."""

    table: Callable[[str], object]
    stsb_texts: Callable[[str], list[str]]


def check_column_list(name: str) -> Callable[[object], None]:
    def check(value):
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise ValueError(f"{name} {value!r}: a list of column names.")

    return check


def check_number(name: str, scale: str) -> Callable[[object], None]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} {value!r} must be a number ({scale}).")

    return check


def check_text(name: str, what: str) -> Callable[[object], None]:
    def check(value):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} {value!r}: {what}.")

    return check


class TaskIO:
    """The run half of a task type. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    default_column: ClassVar[str | None] = "label"  # the target column when the task names none (None: no column)
    shown: ClassVar[tuple[str, ...]] = ()  # the metrics in the printed table and the card, in order
    options: ClassVar[dict[str, DataOption]] = {}  # the data options of this type's own (none by default)
    # A reliability diagram's (observed rate, x axis, bin mark) names.
    reliability_axes: ClassVar[tuple[str, str, str]] = ("fraction positive", "score (P positive)", "score")

    # -- data: what a `tasks:` entry may say, and how the type's rows are read --------------------------------------

    def check_data(self, member, where: str) -> None:
        """Refuse a data setting this type cannot honour (`member`: a `RunTask`), when the run file is read."""

    def column(self, member) -> str | None:
        """The column a run task's targets are read from (None: none)."""
        return member.data.label_column or self.default_column

    def present(self, member, column_names) -> bool:
        """Whether a table with these columns feeds this task (`sentmtl.data.batching.prepare`)."""
        column = self.column(member)
        return column is not None and column in column_names

    def check_columns(self, member, column_names, tasks: dict, where: str) -> None:
        """Refuse a table that lacks a column this task reads; `tasks`: the source's tasks by name."""
        column = self.column(member)
        if column is not None and column not in column_names:
            raise ValueError(
                f"{where}: no column {column!r} for task {member.spec.name!r} (columns: {list(column_names)}); "
                "set its label_column."
            )

    def depends_on(self, member) -> tuple[str, ...]:
        """Tasks of the same source whose targets this one's are made from (read first)."""
        return ()

    def negative_columns(self, member) -> list[str]:
        """Columns of more texts per row (a row's hard negatives), read into the source's `negatives`."""
        return []

    def mining(self, member, readers: Readers) -> MiningRequest | None:
        """The hard negatives the run mines for this task's training rows (None: none are mined)."""
        return None

    def with_negatives(self, member, targets: list, texts: dict) -> list:
        """A training table's targets once mined hard negatives are its `negatives` (`texts`: the rows' `text`,
        `text_pair`, `negatives`, without their prompts, as `targets` reads them; `targets`: the rows' targets as
        read without the negatives)."""
        raise NotImplementedError(f"a {member.spec.type} task takes no mined negatives.")

    def documents(self, member, readers: Readers) -> list[str]:
        """More texts for the source's evaluation split, as rows without targets (retrieval distractors)."""
        return []

    def targets(self, member, texts: dict, values: list | None, where) -> list | None:
        """A table's targets for a run task (`member`: its `TaskSpec` and `DataSpec`), or None when the table gives
        none (`values` is None: its column is absent). `texts`: the rows' `text` (`text_pair`, `negatives`) as the
        data give them, without the model's prompts (which the table's columns carry), `rows`, the number of data
        rows among them (rows after those are retrieval documents, for types that take them),
        `ids`, a mapping that numbers a table's distinct texts across its batches (for types that number them),
        `targets`, those already read by name (`depends_on`), and `tasks`, the source's `TaskSpec`s by name."""
        return None if values is None else self.parse(member.spec, values, where)

    def numbers_texts(self, spec) -> bool:
        """Whether the targets number the table's distinct texts across its batches: state a cached table would
        lack, so such a table is converted anew each time."""
        return False

    def as_score(self, spec, targets) -> list | None:
        """The targets as a score in [0, 1] (what a score task with `score_from` this task takes), or None."""
        return None

    def stratify_by(self, spec) -> bool:
        """Whether a split of this task's source keeps its targets' proportions (the first such task decides)."""
        return False

    def teacher(self, member) -> TeacherRequest | None:
        """The teacher whose vectors the run computes as this task's targets (None: they are read from data)."""
        return None

    def training_rows(self, member, read_targets: Callable[[], list], where: str) -> np.ndarray | None:
        """Which training rows the source keeps for this task (a bool mask), or None for all; `read_targets()`
        gives the training split's targets."""
        return None

    def batch_keys(self, spec, read_targets: Callable[[], list]) -> list | None:
        """Per row, the keys that no two rows of one training batch may share (None: no such rule);
        `read_targets()` gives the rows' targets."""
        return None

    # -- targets: parsing, presence, metrics and figures ------------------------------------------------------------

    def shown_for(self, spec) -> tuple[str, ...]:
        """The metrics the table and the card show for this task (default: the type's `shown`)."""
        return self.shown

    def parse(self, spec, values: list, where) -> list:
        """A raw column → targets, row by row; `where(row)` names a row in an error. Absent rows → NaN."""
        out = []
        for row, value in enumerate(values):
            if is_absent(value):
                out.append(float("nan"))
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where(row)}: {value!r} is not a number (an empty cell marks a row without this task's target)."
                ) from None
            self.check_value(spec, number, where(row))
            out.append(number)
        return out

    def check_value(self, spec, number: float, where: str) -> None:
        if not math.isfinite(number):
            raise ValueError(f"{where}: {number} is not a finite number.")

    def labelled(self, targets) -> np.ndarray:
        """Rows that carry a target (the losses skip the others, and so do the metrics)."""
        targets = np.asarray(targets, dtype=np.float64)
        return ~np.isnan(targets.reshape(len(targets), -1)).any(axis=-1)

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()) -> dict[str, float]:
        raise NotImplementedError

    def describe(self, spec) -> str:
        """One line for the model card."""
        return f"{spec.type}; {spec.loss}"

    def reliability(self, spec, outputs, targets):
        """(confidences, outcomes) for a reliability diagram, or None when the type has none."""
        return None

    def figures(self, spec, outputs, targets) -> dict:
        """What the run draws for this task, from its evaluation arrays: {kind: data}, kinds `reliability`
        ((confidences, outcomes)) and `confusion` (the K×K matrix, rows the true class); `report` draws each."""
        points = self.reliability(spec, outputs, targets)
        return {} if points is None else {"reliability": points}

    def reliability_range(self, spec) -> tuple[float, float]:
        """The x range of the diagram: where confidences can lie."""
        return 0.0, 1.0


TASK_IO: dict[str, TaskIO] = {}


# The capability flags of 0.2's TaskIO and what replaced each: a user type that still sets one would silently lose
# the behaviour (a split no longer stratified, no teacher vectors), so it is refused.
REMOVED_FLAGS = {
    "class_ids": "stratify_by(spec) (and as_score, for score_from)",
    "teacher_targets": "teacher(member) -> TeacherRequest",
    "from_texts": "present / check_columns / targets (and numbers_texts)",
    "distinct_in_batch": "batch_keys(spec, read_targets)",
}


def register_task_io(cls: type[TaskIO]) -> type[TaskIO]:
    old = [name for name in REMOVED_FLAGS if hasattr(cls, name)]
    if old:
        raise TypeError(
            f"{cls.__name__} sets {', '.join(old)}, a TaskIO flag that sentmtl no longer reads; override "
            + "; ".join(f"{name} → {REMOVED_FLAGS[name]}" for name in old)
            + " (docs/design.md)."
        )
    TASK_IO[cls.name] = cls()
    return cls


def task_io(spec) -> TaskIO:
    if spec.type not in TASK_IO:
        raise ValueError(f"task type {spec.type!r} has no run half (TaskIO); register one with @register_task_io.")
    return TASK_IO[spec.type]


def option_owners(name: str) -> list[str]:
    """The registered types that declare the data option `name`."""
    return sorted(type_name for type_name, io in TASK_IO.items() if name in io.options)


def task_metrics(spec, outputs, targets, domains=None, domain_names=()) -> dict[str, float]:
    """One task's metrics, unprefixed (`accuracy`, `mse`, `spearman`, …), over the rows that carry its target."""
    return task_io(spec).metrics(spec, outputs, targets, domains, domain_names)


def reliability_points(spec, outputs, targets):
    """(confidences, outcomes) of a task's reliability diagram, or None for a type (or targets) without one."""
    return task_io(spec).reliability(spec, outputs, targets)


def labelled_rows(spec, outputs, targets, domains=None):
    """Outputs, targets and domains of the rows that carry this task's target."""
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    keep = task_io(spec).labelled(targets)
    if keep.all():
        return outputs, targets, domains
    return outputs[keep], targets[keep], (np.asarray(domains)[keep] if domains is not None else None)


__all__ = [
    "DEFAULT_TEXT_PAIR_COLUMN",
    "LabelMap",
    "DataOption",
    "MiningRequest",
    "REMOVED_FLAGS",
    "Readers",
    "TASK_IO",
    "TaskIO",
    "TeacherRequest",
    "check_column_list",
    "check_number",
    "check_text",
    "labelled_rows",
    "metric_label",
    "option_owners",
    "register_task_io",
    "reliability_points",
    "task_io",
    "task_metrics",
]
