"""The test of the one-design layout: a new task type is one `TaskType` (model half) and one `TaskIO` (run half),
written here, outside the package, and a whole run — data, training, evaluation, the table, the card, save and load —
takes it with no dispatch touched anywhere else. Its data option of its own (`threshold`) is declared by its `TaskIO`
alone: the run file takes it, checks it, refuses it on another type and saves it for a replay."""

import json

import numpy as np
import pytest
import torch
import yaml

import sentmtl
from sentmtl.data.plan import RunTask
from sentmtl.model.task_types import TASK_TYPES, TaskType, masked_mean, register_task_type
from sentmtl.tasks.io import TASK_IO, DataOption, TaskIO, check_number, register_task_io
from sentmtl.tasks.labels import is_absent
from sentmtl.training.run import main


class Hinge(TaskType):
    """Binary targets (0 / 1) through one margin score, trained with the hinge loss max(0, 1 − y·s), y = ±1."""

    name, losses, scaled_head = "hinge", ("hinge",), False

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        sign = torch.where(keep, 2 * torch.nan_to_num(targets) - 1, torch.zeros_like(targets))
        return masked_mean(torch.relu(1 - sign * output.float()), keep)


class HingeIO(TaskIO):
    name, shown = "hinge", ("accuracy",)
    options = {
        "threshold": DataOption(
            check_number("threshold", "on the column's scale"), "a numeric column's rows at or above it are positives"
        )
    }

    def targets(self, member, texts, values, where):
        threshold = member.options.get("threshold")
        if values is not None and threshold is not None:  # a rating → 0 / 1
            values = [None if is_absent(value) else float(float(value) >= threshold) for value in values]
        return super().targets(member, texts, values, where)

    def check_value(self, spec, number, where):
        if number not in (0.0, 1.0):
            raise ValueError(f"{where}: {number} is not 0 or 1 (a hinge target).")

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        keep = self.labelled(targets)
        return {"accuracy": float(((np.asarray(outputs)[keep] > 0) == (np.asarray(targets)[keep] > 0.5)).mean())}

    def describe(self, spec):
        return "a margin score for binary targets; hinge"


@pytest.fixture
def hinge_type():
    register_task_type(Hinge)
    register_task_io(HingeIO)
    yield
    TASK_TYPES.pop("hinge")
    TASK_IO.pop("hinge")


def test_a_new_task_type_runs_end_to_end(hinge_type, tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {
                        "name": "margin",
                        "type": "hinge",
                        "data": {"train_file": str(synthetic_csv)},
                        "text_column": "text",
                        "label_column": "rating",
                        "threshold": 2.5,
                    }
                ]
            }
        )
    )
    rows = synthetic_csv.read_text().splitlines()
    synthetic_csv.write_text(
        "\n".join(
            [rows[0] + ",rating"]
            + [f"{r},{4 + i % 2 if r.endswith('positive') else i % 2}" for i, r in enumerate(rows[1:])]
        )
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                str(run_file),
                "--model_name_or_path",
                str(tiny_encoder_dir),
                "--embedding_size",
                "16",
                "--num_train_epochs",
                "3",
                "--learning_rate",
                "1e-3",
                "--output_dir",
                str(out),
                "--use_cpu",
                "true",
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_margin_accuracy", "eval_margin_loss", "eval_loss"} <= set(metrics)
    assert "margin" in printed and "accuracy" in printed  # the metrics table
    assert "a margin score for binary targets; hinge" in (out / "README.md").read_text()  # the card
    saved = yaml.safe_load((out / "run_config.yaml").read_text())["tasks"][0]
    assert saved["threshold"] == 2.5  # the replay keeps the type's option
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))  # the head comes back from config.json
    assert model.margin_head.out_features == 1 and model.margin_head.logit_scale is None
    with torch.no_grad():
        out_ = model(**tokenizer(["the film was good ."], return_tensors="pt"))
    assert out_.task_outputs["margin"].shape == (1,)


def test_a_bad_value_of_the_new_type_names_its_place(hinge_type, tiny_encoder_dir, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentence,label\nthe film was good .,1\nbad .,0.5\n")
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump({"tasks": [{"name": "margin", "type": "hinge", "data": {"train_file": str(path)}}]})
    )
    with pytest.raises(ValueError, match=r"bad.csv \(train\), line 3, column 'label': 0.5 is not 0 or 1"):
        from sentmtl.training.run import parse_args, run

        run(
            *parse_args(
                [
                    str(run_file),
                    "--model_name_or_path",
                    str(tiny_encoder_dir),
                    "--output_dir",
                    str(tmp_path / "o"),
                    "--use_cpu",
                    "true",
                ]
            )
        )


def test_the_new_types_data_option_is_checked_and_refused_elsewhere(hinge_type):
    task = RunTask.from_dict(
        {"name": "m", "type": "hinge", "data": {"train_file": "x.csv"}, "threshold": 3}, "tasks[0]"
    )
    assert task.options == {"threshold": 3} and task.to_dict()["threshold"] == 3
    with pytest.raises(ValueError, match=r"tasks\[0\]: threshold 'high' must be a number \(on the column's scale\)"):
        RunTask.from_dict({"name": "m", "type": "hinge", "threshold": "high"}, "tasks[0]")
    with pytest.raises(ValueError, match=r"tasks\[0\]: threshold: only for hinge tasks \(a classification task takes"):
        RunTask.from_dict({"name": "c", "type": "classification", "labels": ["a", "b"], "threshold": 3}, "tasks[0]")
