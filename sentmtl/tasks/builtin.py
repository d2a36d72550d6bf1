"""The built-in task types' run halves: how each reads its targets and data options, measures and shows them.

One `TaskIO` per type of `sentmtl.model.task_types`, registered under the same name when `sentmtl.tasks` is imported.
Each type's data options live on it: `score_from` (score), `teacher` (distillation); the contrastive type, with its
retrieval options, is `sentmtl.tasks.contrastive`.
"""

import numpy as np

from ..model.task_types import IGNORE_INDEX
from . import metrics as m
from .io import (
    DataOption,
    TaskIO,
    TeacherRequest,
    check_text,
    labelled_rows,
    register_task_io,
    task_io,
)
from .labels import LabelMap, is_absent, metric_label


@register_task_io
class ClassificationIO(TaskIO):
    name = "classification"
    shown = ("accuracy", "precision", "recall", "f1", "macro_f1", "accuracy_*", "ece", "log_loss", "confidence")
    reliability_axes = ("accuracy", "top-label confidence", "confidence")

    def stratify_by(self, spec):
        return True  # class ids: a split keeps each class's share

    def as_score(self, spec, targets):
        # The seed's --train_file without a score column: negative → 0.0, positive → 1.0 (class id / (K − 1)).
        return [label / (len(spec.labels) - 1) if label >= 0 else float("nan") for label in targets]

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
            if is_absent(cell):
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
    options = {
        "score_from": DataOption(
            check_text("score_from", "the name of a classification task of the same data"),
            "where the data has no score column, take this task's targets as the score (a classification task's "
            "class id / (K − 1))",
        )
    }

    def depends_on(self, member):
        source = member.options.get("score_from")
        return () if source is None else (source,)

    def check_columns(self, member, column_names, tasks, where):
        source = member.options.get("score_from")
        if source is None or self.column(member) in column_names:
            return super().check_columns(member, column_names, tasks, where)
        spec = tasks.get(source)
        if spec is None or task_io(spec).as_score(spec, []) is None:
            raise ValueError(
                f"{where}: task {member.spec.name!r} has no column {self.column(member)!r}, and score_from "
                f"{source!r} is not a classification task of the same data."
            )

    def targets(self, member, texts, values, where):
        source = member.options.get("score_from")
        if values is None and source is not None:
            spec = texts["tasks"][source]
            return task_io(spec).as_score(spec, texts["targets"][source])
        return super().targets(member, texts, values, where)

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
    name, default_column = "distillation", None  # no column: the run computes the targets
    shown = ("structure_spearman",)
    options = {
        "teacher": DataOption(
            check_text("teacher", "a model name or path (leave it out for the model as the run starts)"),
            "the encoder whose pooled vectors are the targets; unset: the model as this run starts (for a continued "
            "run, the checkpoint's encoder, not the original one)",
        )
    }

    def teacher(self, member):
        return TeacherRequest(member.options.get("teacher"))

    def labelled(self, targets):
        return np.ones(len(targets), dtype=bool)

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        return m.distillation_metrics(outputs, targets)

    def describe(self, spec):
        return f"keeps the starting encoder's similarity structure; {spec.loss}"
