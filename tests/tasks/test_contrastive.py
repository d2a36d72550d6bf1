"""sentmtl/tasks/contrastive.py: the contrastive type's data options and row protocol — which options change the
source's rows, which training rows train, what a batch must not repeat, what it refuses — owned by the type."""

import numpy as np
import pytest

from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import Readers, task_io

PAIRS = DataSpec({"train_file": "pairs.csv"}, text_column="anchor", text_pair_column="positive")
RETRIEVAL = TaskSpec("retrieval", "contrastive")


def member(**options):
    return RunTask(RETRIEVAL, PAIRS, options)


def test_row_shaping_options_keep_sources_apart_and_a_teacher_does_not():
    plain, filtered = member(), member(min_score=0.5)
    assert plain.source_key() != filtered.source_key()
    assert plain.source_key() != member(negative_columns=["negative"]).source_key()
    distill = TaskSpec("d", "distillation")
    assert (
        RunTask(distill, PAIRS).source_key()
        == RunTask(distill, PAIRS, {"teacher": "other"}).source_key()
        == RunTask(TaskSpec("sim", "similarity"), PAIRS).source_key()
    )  # a teacher adds a target column; the rows are the same


def test_rows_below_min_score_are_left_out_of_training_only():
    io = task_io(RETRIEVAL)
    targets = [[1, 0, 1], [0, 2, 3], [1, 4, 5]]
    assert io.training_rows(member(), lambda: targets, "pairs.csv") is None
    np.testing.assert_array_equal(io.training_rows(member(min_score=0.5), lambda: targets, "pairs.csv"), [1, 0, 1])
    with pytest.raises(ValueError, match="pairs.csv: no training row has a score >= min_score 0.5"):
        io.training_rows(member(min_score=0.5), lambda: [[0, 0, 1]], "pairs.csv")
    assert io.batch_keys(RETRIEVAL, lambda: targets) == [(0, 1), (2, 3), (4, 5)]


def test_its_column_and_presence_follow_its_options():
    io = task_io(RETRIEVAL)
    assert io.column(member()) is None and io.column(member(min_score=0.5)) == "score"
    assert io.present(member(), ["anchor", "positive"]) and not io.present(member(), ["anchor", "text"])
    io.check_columns(member(), ["anchor", "positive"], {}, "pairs.csv")  # no score needed without min_score
    with pytest.raises(ValueError, match="no column 'score' for task 'retrieval'"):
        io.check_columns(member(min_score=0.5), ["anchor", "positive"], {}, "pairs.csv")
    assert io.negative_columns(member(negative_columns=["n1", "n2"])) == ["n1", "n2"]


def test_distractors_are_read_through_the_readers_the_data_layer_lends(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({"positive": ["d1", " ", "d2"], "other": ["x", "y", "z"]})
    readers = Readers(table=lambda path: table, stsb_texts=lambda folder: [f"sts {folder}"])
    io = task_io(RETRIEVAL)
    assert io.documents(member(distractors={"file": "d.csv"}), readers) == ["d1", "d2"]  # the task's text columns
    assert io.documents(member(distractors={"file": "d.csv", "columns": ["other"]}), readers) == ["x", "y", "z"]
    assert io.documents(member(distractors={"stsb": "folder"}), readers) == ["sts folder"]
    with pytest.raises(ValueError, match=r"distractors d.csv: no column \['missing'\]"):
        io.documents(member(distractors={"file": "d.csv", "columns": ["missing"]}), readers)


def test_it_refuses_a_stream_and_a_subset():
    streamed = DataSpec({"train_file": "p.csv", "validation_file": "d.csv", "streaming": True})
    with pytest.raises(ValueError, match="a stream has no whole table"):
        RunTask(RETRIEVAL, streamed)
    with pytest.raises(ValueError, match="max_samples would cut pairs that share a text apart"):
        RunTask(RETRIEVAL, DataSpec({"train_file": "p.csv"}, max_samples=10))
