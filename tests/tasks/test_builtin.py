"""sentmtl/tasks/builtin.py and the protocol of sentmtl/tasks/io.py: each built-in type answers the data layer's
questions itself — its own data options (`score_from`, `teacher`), a score derived from a class id, which task
stratifies a split, which targets a teacher computes — and the data layer reads nothing it does not ask for."""

import math

import pytest

from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import TASK_IO, TeacherRequest, option_owners, task_io

TONE = TaskSpec("tone", "classification", labels=["negative", "neutral", "positive"])


def test_each_data_option_has_one_owner():
    owners = {name: option_owners(name) for io in TASK_IO.values() for name in io.options}
    assert owners == {
        "score_from": ["score"],
        "teacher": ["distillation"],
        "negative_columns": ["contrastive"],
        "min_score": ["contrastive"],
        "distractors": ["contrastive"],
        "hard_negatives": ["contrastive"],
    }


def test_a_score_from_a_class_id_is_the_classification_types_rule():
    score = RunTask(TaskSpec("rating", "score"), DataSpec({"train_file": "x.csv"}), {"score_from": "tone"})
    io = task_io(score.spec)
    assert io.depends_on(score) == ("tone",)
    texts = {"tasks": {"tone": TONE}, "targets": {"tone": [0, 1, 2, -100]}}
    derived = io.targets(score, texts, None, lambda row: f"row {row}")
    assert derived[:3] == [0.0, 0.5, 1.0] and math.isnan(derived[3])  # K = 3: id / 2; no label, no score
    # The column, when the data has it, wins over the derivation.
    assert io.targets(score, texts, ["0.25", "", "1", "0"], lambda row: f"row {row}")[0] == 0.25
    io.check_columns(score, ["sentence", "label"], {"tone": TONE}, "f.csv")  # derivable: no column needed
    regression = TaskSpec("tone", "regression")
    with pytest.raises(ValueError, match="score_from 'tone' is not a classification task of the same data"):
        io.check_columns(score, ["sentence", "label"], {"tone": regression}, "f.csv")
    with pytest.raises(ValueError, match=r"f.csv: no column 'score' for task 'rating'"):
        task_io(score.spec).check_columns(
            RunTask(score.spec, score.data), ["sentence"], {"tone": TONE}, "f.csv"
        )  # no score_from: the column is required


def test_only_class_ids_stratify_and_only_distillation_asks_a_teacher():
    specs = {
        "classification": TONE,
        "multilabel": TaskSpec("tags", "multilabel", labels=["a", "b"]),
        "score": TaskSpec("s", "score"),
        "regression": TaskSpec("r", "regression"),
        "similarity": TaskSpec("sim", "similarity"),
        "distillation": TaskSpec("d", "distillation"),
        "contrastive": TaskSpec("c", "contrastive"),
    }
    assert [name for name, spec in specs.items() if task_io(spec).stratify_by(spec)] == ["classification"]
    data = DataSpec({"train_file": "x.csv"})
    asks = {name: task_io(spec).teacher(RunTask(spec, data)) for name, spec in specs.items()}
    assert asks == {name: (TeacherRequest(None) if name == "distillation" else None) for name in specs}
    named = RunTask(specs["distillation"], data, {"teacher": "some/encoder"})
    assert task_io(named.spec).teacher(named) == TeacherRequest("some/encoder")


def test_types_without_a_batch_rule_never_read_their_targets():
    def read():
        raise AssertionError("targets read for a type with no batch rule")

    for spec in (TONE, TaskSpec("s", "score"), TaskSpec("d", "distillation")):
        assert task_io(spec).batch_keys(spec, read) is None
        member = RunTask(spec, DataSpec({"train_file": "x.csv"}))
        assert task_io(spec).training_rows(member, read, "x.csv") is None


@pytest.mark.parametrize(
    "values, message",
    [
        ({"teacher": ""}, "teacher '': a model name or path"),
        ({"score_from": 3}, "score_from 3: the name of a classification task"),
    ],
)
def test_the_types_check_their_own_options(values, message):
    spec = TaskSpec("d", "distillation") if "teacher" in values else TaskSpec("s", "score")
    with pytest.raises(ValueError, match=message):
        RunTask(spec, DataSpec({"train_file": "x.csv"}), values)
