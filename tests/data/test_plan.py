"""sentmtl/data/plan.py: a tasks: run file refuses the flags it would leave unused, and checks each task's fields when
it is read."""

import re

import pytest
import yaml
from helpers import write_csv

from sentmtl.data.plan import DataSpec, RunTask, tasks_from_flags
from sentmtl.data.sources import build_sources
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.arguments import DataArguments
from sentmtl.training.run import parse_args


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--distillation_weight", "0"], "--distillation_weight would be ignored"),
        (["--max_samples", "10"], r"no task reads the UCI corpus \(data: uci\), so --max_samples would be ignored"),
        (["--sources", "imdb"], r"no task reads the UCI corpus \(data: uci\), so --sources would be ignored"),
    ],
)
def test_flags_a_tasks_file_overrides_are_refused(synthetic_csv, tmp_path, flags, message):
    """Issue #20, item 8: flags that a tasks: file would leave unused are refused, not silently dropped."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["a", "b"],
                        "data": {"train_file": str(synthetic_csv)},
                    }
                ]
            }
        )
    )
    with pytest.raises(ValueError, match=message):
        parse_args([str(run_file), *flags, "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"])


def test_file_flags_with_the_corpus_and_an_unused_test_size_are_refused(tmp_path):
    """Found reviewing the #20 change: file flags with the corpus, and a --test_size no source splits, are refused."""
    model_args, data_args, training_args = parse_args(
        ["--score_column", "rating", "--output_dir", str(tmp_path), "--use_cpu", "true"]
    )
    with pytest.raises(ValueError, match="--score_column name\\(s\\) columns of --train_file"):
        tasks_from_flags(model_args, data_args, training_args)
    train = write_csv(tmp_path / "t.csv", ["sentence", "label"], [["a", 0], ["b", 1]])
    task = RunTask(
        TaskSpec("tone", "classification", labels=["neg", "pos"]),
        DataSpec({"train_file": str(train), "validation_file": str(train)}),
    )
    with pytest.raises(ValueError, match="--test_size 0.3: every source has evaluation data of its own"):
        build_sources([task], DataArguments(test_size=0.3), seed=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("min_score", 0.5, "min_score: only for contrastive tasks"),
        ("negative_columns", ["n"], "negative_columns: only for contrastive tasks"),
        ("distractors", {"stsb": "x"}, "distractors: only for contrastive tasks"),
        ("distractors", {"path": "x"}, "use {stsb: folder} or {file: path, columns"),
        ("batch_size", 0, "batch_size 0 must be a positive integer"),
        ("min_score", "high", "min_score 'high' must be a number"),
        ("distractors", {"file": "d.csv", "columns": []}, "distractors columns []: a non-empty list"),
        ("max_samples", 10, "max_samples would cut pairs that share a text apart"),
    ],
)
def test_retrieval_fields_are_checked_when_the_run_file_is_read(tmp_path, field, value, message):
    task = {"name": "t", "type": "similarity", "data": {"train_file": "x.csv"}, field: value}
    if not message.endswith("only for contrastive tasks"):
        task["type"] = "contrastive"
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"tasks": [task]}))
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])
