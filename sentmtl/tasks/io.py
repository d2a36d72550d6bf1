"""Task types, run half: how a type reads its targets from data, measures them, and shows them in the report and card.

Registered under the same names as the model half (`sentmtl.model.task_types`); scikit-learn and scipy are allowed here,
since this half never travels beside the weights. A new task type is a `TaskType` plus a `TaskIO` (docs/design.md).

Label names map values with one rule (`LabelMap`), for classification, multilabel and `--class_names` alike.
"""

import math
from typing import ClassVar

import numpy as np

from ..model.task_types import DEFAULT_SCALE, IGNORE_INDEX
from . import metrics as m


class LabelMap:
    """Values → class ids, by one documented rule:

    1. a value matches a label name exactly (both trimmed);
    2. else it matches one name case-insensitively, where only one does;
    3. else a number matches the one name that is the same number (names "0.5" … "2.5": the value 2.0 is "2.0";
       names "1" … "5": the value 1 is the class *named* "1");
    4. else an integer value (1, "1", 1.0) is a class id 0 … K−1, but only when no label name is a number;
    5. anything else is an error naming the place, the value and the names.
    An empty cell, None or NaN means "no target on this row" (`None` is returned). A `ClassLabel` column is read by
    its names through rules 1–3 (`task_data.table_columns`), so a dataset's own class order cannot swap classes.
    """

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.exact = {name: i for i, name in enumerate(self.names)}
        folded: dict[str, list[int]] = {}
        numbers: dict[float, list[int]] = {}
        for i, name in enumerate(self.names):
            folded.setdefault(name.casefold(), []).append(i)
            if _as_number(name) is not None:
                numbers.setdefault(_as_number(name), []).append(i)
        self.folded, self.numbers = folded, numbers
        self.ids_allowed = not numbers

    def __call__(self, value, where: str) -> int | None:
        shown = value
        value = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value  # numpy
        if _is_absent(value):
            return None
        if isinstance(value, bool):
            value = str(value).lower()  # True is not the id 1: it matches a name "true" or nothing
        text = _as_text(value)
        named = self.by_name(text, where, shown)
        if named is not None:
            return named
        number = _as_integer(text)
        if number is not None and self.ids_allowed and 0 <= number < len(self.names):
            return number
        ids = f" or a class id 0–{len(self.names) - 1}" if self.ids_allowed else " (numbers are names here, not ids)"
        raise ValueError(f"{where}: label {shown!r} is not one of the names {self.names}{ids}.")

    def by_name(self, text: str, where: str, shown=None) -> int | None:
        """Rules 1–3 alone: the class id `text` names, or None when it names none (an ambiguous match is an error)."""
        text = _as_text(text)
        if text in self.exact:
            return self.exact[text]
        matches = self.folded.get(text.casefold(), []) or self.numbers.get(_as_number(text), [])
        if len(matches) > 1:
            raise ValueError(
                f"{where}: label {text if shown is None else shown!r} matches {[self.names[i] for i in matches]} when "
                "case (or the way a number is written) is ignored; write it exactly as one of them."
            )
        return matches[0] if matches else None


def metric_label(name: str) -> str:
    """A label name as it appears in a metric's key (`f1_positive`): characters other than letters, digits, `-`
    and `.` become `_`."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in str(name).strip())


def _is_absent(value) -> bool:
    value = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes, list)) else value
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _as_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a CSV column with an empty cell is read as floats: 1.0 is the label "1"
    return str(value).strip()


def _as_number(text) -> float | None:
    try:
        number = float(str(text).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _as_integer(text: str) -> int | None:
    text = str(text).strip()
    return int(text) if text.lstrip("+-").isdigit() else None


class TaskIO:
    """The run half of a task type. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    default_column: ClassVar[str | None] = "label"  # the target column when the task names none (None: no column)
    shown: ClassVar[tuple[str, ...]] = ()  # the metrics in the printed table and the card, in order
    class_ids: ClassVar[bool] = False  # its targets are class ids 0 … K−1: a split is stratified by the first such task
    teacher_targets: ClassVar[bool] = False  # its targets are a teacher's vectors, computed by the run
    from_texts: ClassVar[bool] = False  # its targets come from the row's texts (`targets`), a column optional
    distinct_in_batch: ClassVar[bool] = False  # its training batches must not repeat a key (`batch_keys`)
    # A reliability diagram's (observed rate, x axis, bin mark) names.
    reliability_axes: ClassVar[tuple[str, str, str]] = ("fraction positive", "score (P positive)", "score")

    def shown_for(self, spec) -> tuple[str, ...]:
        """The metrics the table and the card show for this task (default: the type's `shown`)."""
        return self.shown

    def column(self, member) -> str | None:
        """The column a run task's targets are read from (None: none)."""
        return member.data.label_column or self.default_column

    def targets(self, member, texts: dict, values: list | None, where) -> list:
        """A table's targets for a run task (`member`: its `TaskSpec` and `DataSpec`): its column parsed. `texts`:
        the rows' `text` (`text_pair`, `negatives`), `rows`, the number of data rows among them (rows after
        those are retrieval documents, for types that take them), and `ids`, a mapping that numbers a table's
        distinct texts across its batches (for types that number them)."""
        return self.parse(member.spec, values, where)

    def batch_keys(self, spec, targets) -> list | None:
        """Per row, the keys that no two rows of one training batch may share (None: no such rule)."""
        return None

    def parse(self, spec, values: list, where) -> list:
        """A raw column → targets, row by row; `where(row)` names a row in an error. Absent rows → NaN."""
        out = []
        for row, value in enumerate(values):
            if _is_absent(value):
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


def register_task_io(cls: type[TaskIO]) -> type[TaskIO]:
    TASK_IO[cls.name] = cls()
    return cls


def task_io(spec) -> TaskIO:
    if spec.type not in TASK_IO:
        raise ValueError(f"task type {spec.type!r} has no run half (TaskIO); register one with @register_task_io.")
    return TASK_IO[spec.type]


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


@register_task_io
class ClassificationIO(TaskIO):
    name = "classification"
    shown = ("accuracy", "precision", "recall", "f1", "macro_f1", "accuracy_*", "ece", "log_loss", "confidence")
    reliability_axes = ("accuracy", "top-label confidence", "confidence")
    class_ids = True

    def parse(self, spec, values, where):
        lookup = LabelMap(spec.labels)
        return [
            IGNORE_INDEX if (label := lookup(value, where(row))) is None else label for row, value in enumerate(values)
        ]

    def labelled(self, targets):
        return np.asarray(targets) != IGNORE_INDEX

    def shown_for(self, spec):
        if len(spec.labels) != 2:
            return self.shown
        # Two classes: precision / recall / F1 are the second label's, and the table and the card say which.
        named = {name: f"{name}_{metric_label(spec.labels[1])}" for name in ("precision", "recall", "f1")}
        return tuple(named.get(name, name) for name in self.shown)

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, targets, domains = labelled_rows(spec, outputs, targets, domains)
        labels, probabilities = np.asarray(targets), m.softmax(np.asarray(outputs, np.float64))
        out = {
            **m.classification_metrics(labels, probabilities.argmax(-1), len(spec.labels), domains, domain_names),
            **m.calibration_metrics(labels, probabilities),
        }
        if len(spec.labels) == 2:  # `precision`, `recall`, `f1` stay as aliases (a metric_for_best_model of 0.2)
            positive = metric_label(spec.labels[1])
            out.update({f"{name}_{positive}": out[name] for name in ("precision", "recall", "f1")})
        return out

    def describe(self, spec):
        return f"classification over {', '.join(spec.labels)}; {spec.loss}"

    def reliability(self, spec, outputs, targets):
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        probabilities = m.softmax(np.asarray(outputs, np.float64))
        return probabilities.max(-1), (probabilities.argmax(-1) == np.asarray(targets)).astype(float)

    def reliability_range(self, spec):
        return 1.0 / len(spec.labels), 1.0  # the top-label probability of K classes is at least 1/K

    def figures(self, spec, outputs, targets):
        kept, labels, _ = labelled_rows(spec, outputs, targets)
        predicted = np.asarray(kept).argmax(-1)
        return {
            **super().figures(spec, outputs, targets),
            "confusion": m.confusion(labels, predicted, len(spec.labels)),
        }


@register_task_io
class MultilabelIO(TaskIO):
    name, default_column = "multilabel", "labels"
    shown = ("micro_f1", "macro_f1", "subset_accuracy")

    def parse(self, spec, values, where):
        lookup, out = LabelMap(spec.labels), []
        for row, cell in enumerate(values):
            if _is_absent(cell):
                out.append([float("nan")] * len(spec.labels))
                continue
            vector = [0.0] * len(spec.labels)  # an empty list is a row with no label set, not an absent one
            for value in cell if isinstance(cell, list) else str(cell).split(","):
                label = lookup(value, where(row))
                if label is not None:
                    vector[label] = 1.0
            out.append(vector)
        return out

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        return m.multilabel_metrics(np.asarray(targets), np.asarray(outputs) > 0)

    def describe(self, spec):
        return f"multi-label over {', '.join(spec.labels)}; {spec.loss}"


@register_task_io
class ScoreIO(TaskIO):
    name, default_column = "score", "score"
    shown = ("accuracy", "roc_auc", "mse", "mae", "brier", "ece", "pearson", "spearman")

    def check_value(self, spec, number, where):
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"{where}: {number} is outside [0, 1] (a score target).")

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        return m.score_metrics(np.asarray(targets, np.float64), m.sigmoid(np.asarray(outputs, np.float64)))

    def describe(self, spec):
        return f"a score in [0, 1]; {spec.loss}"

    def reliability(self, spec, outputs, targets):
        # The score read as P(positive): meaningful only against binary targets.
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        targets = np.asarray(targets, np.float64)
        if not m.is_binary(targets):
            return None
        return m.sigmoid(np.asarray(outputs, np.float64)), targets


@register_task_io
class RegressionIO(TaskIO):
    name = "regression"
    shown = ("mse", "mae", "pearson", "spearman")

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        return m.regression_metrics(np.asarray(targets, np.float64), np.asarray(outputs, np.float64))


@register_task_io
class SimilarityIO(TaskIO):
    name, default_column = "similarity", "score"
    shown = ("spearman", "pearson")

    def check_value(self, spec, number, where):
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"{where}: {number} is outside [0, 1] (a similarity target).")

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, targets, _ = labelled_rows(spec, outputs, targets)
        return m.correlation_metrics(np.asarray(targets, np.float64), np.asarray(outputs, np.float64))

    def describe(self, spec):
        return f"sentence-pair similarity through the embedding's cosine; {spec.loss}"


@register_task_io
class DistillationIO(TaskIO):
    name, default_column, teacher_targets = "distillation", None, True  # no column: the run computes the targets
    shown = ("structure_spearman",)

    def labelled(self, targets):
        return np.ones(len(targets), dtype=bool)

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        return m.distillation_metrics(outputs, targets)

    def describe(self, spec):
        return f"keeps the starting encoder's similarity structure; {spec.loss}"


@register_task_io
class ContrastiveIO(TaskIO):
    """Targets: per row `[flag, anchor id, positive id, negative ids …]`, ids numbering the split's distinct texts.
    flag 1: a pair; 0: a row below the source's `min_score` (evaluation keeps its positive as a retrieval document,
    training drops it); 2: a distractor document (`distractors`). Metrics: retrieval of the positives by the
    anchors (`metrics.retrieval_metrics`)."""

    name, default_column, from_texts, distinct_in_batch = "contrastive", None, True, True
    shown = (
        "recall@1",
        "recall@10",
        "mrr@10",
        "ndcg@10",
        "queries",
        "documents",
        "distractors_recall@1",
        "distractors_recall@10",
        "distractors_mrr@10",
        "distractors_ndcg@10",
        "distractors_documents",
    )

    def column(self, member):
        return member.data.label_column or ("score" if member.data.min_score is not None else None)

    def targets(self, member, texts, values, where):
        ids: dict[str, int] = texts.get("ids", {})  # given: the numbering continues across a table's batches
        number = lambda text: ids.setdefault(text, len(ids))  # noqa: E731
        negatives, threshold, out = texts.get("negatives"), member.data.min_score, []
        for row, (anchor, positive) in enumerate(zip(texts["text"], texts["text_pair"])):
            if row >= texts["rows"]:
                flag = 2
            elif threshold is None:
                flag = 1
            else:
                value = values[row]
                if _is_absent(value) or _as_number(value) is None:
                    raise ValueError(
                        f"{where(row)}: {value!r} is not a score, and min_score {threshold} needs one on every row."
                    )
                flag = int(_as_number(value) >= threshold)
            out.append([flag, number(anchor), number(positive), *map(number, negatives[row] if negatives else ())])
        return out

    def labelled(self, targets):
        return np.asarray(targets)[:, 0] == 1

    def batch_keys(self, spec, targets):
        return [tuple(row[1:]) for row in targets]

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, ids = np.asarray(outputs, np.float32), np.asarray(targets)
        flag, texts = ids[:, 0], ids[:, 1:]
        # One vector per distinct text: its first occurrence (ids number texts in order of first appearance).
        unique, first = np.unique(texts.reshape(-1), return_index=True)
        vectors = dict(zip(unique.tolist(), outputs.reshape(-1, outputs.shape[-1])[first]))
        query_ids, relevant = [], {}
        for anchor, positive in ids[flag == 1][:, 1:3].tolist():  # a query asked twice is one query: its positives
            if anchor not in relevant:
                query_ids.append(anchor)
            relevant.setdefault(anchor, set()).add(positive)
        corpus = np.unique(texts[(flag == 0) | (flag == 1)][:, 1:]).tolist()
        out = {"queries": len(query_ids), "documents": len(corpus)}
        if not query_ids:
            return out
        queries = np.stack([vectors[q] for q in query_ids])
        in_corpus = set(corpus)
        distractors = [d for d in np.unique(texts[flag == 2][:, 1]).tolist() if d not in in_corpus]
        for prefix, documents in (("", corpus), ("distractors_", corpus + distractors)):
            if prefix and not distractors:
                break
            position = {doc: i for i, doc in enumerate(documents)}
            wanted = [{position[d] for d in relevant[q]} for q in query_ids]
            scores = m.retrieval_metrics(queries, np.stack([vectors[d] for d in documents]), wanted)
            out.update({f"{prefix}{name}": value for name, value in scores.items()})
            if prefix:
                out["distractors_documents"] = len(documents)
        return out

    def describe(self, spec):
        scale = spec.scale if spec.scale is not None else DEFAULT_SCALE
        return f"retrieval pairs with in-batch negatives; {spec.loss}, scale {scale:g}"


__all__ = [
    "LabelMap",
    "TASK_IO",
    "TaskIO",
    "labelled_rows",
    "metric_label",
    "register_task_io",
    "reliability_points",
    "task_io",
    "task_metrics",
]
