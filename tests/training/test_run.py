"""sentmtl/training/run.py (run_mtl.py): arguments validated before any model loads, evaluation only when nothing
trains, the distillation teacher. Whole training runs: tests/e2e/test_run_mtl.py."""

import numpy as np
import pytest
import torch
from helpers import (
    model_with,
    tiny_run_flags,
)

import sentmtl
from sentmtl.data.plan import RunTask
from sentmtl.data.teacher_cache import teacher_encoder
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.run import main


def test_freeze_all_evaluates_without_training(tiny_encoder_dir, synthetic_csv, tmp_path, caplog):
    out = tmp_path / "frozen"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--freeze", "all")) == 0
    assert (out / "eval_results.json").is_file() and not (out / "train_results.json").exists()
    assert "nothing to train, evaluating only" in caplog.text


def test_everything_frozen_is_the_evaluation_only_path(tiny_encoder_dir, synthetic_csv, tmp_path, caplog):
    out = tmp_path / "frozen"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--freeze", "all")) == 0
    assert (out / "eval_results.json").is_file() and not (out / "train_results.json").exists()
    assert "nothing to train, evaluating only" in caplog.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pooling", "max"], "pooling='max' is not supported; choose one of mean, cls, pooler"),
        (["--freeze", "encoder"], "--freeze 'encoder' is not supported; choose one of none, all, backbone"),
        (
            ["--loss_weighting", "learned"],
            "loss_weighting='learned' is not supported; choose one of static, uncertainty",
        ),
        (["--learning_rate", "0"], "--learning_rate 0.0 must be > 0"),
        (["--head_learning_rate=-1e-4"], "--head_learning_rate -0.0001 must be > 0"),
        (["--test_size", "1.5"], "--test_size 1.5 must be between 0 and 1 (exclusive)"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(
    tiny_encoder_dir, synthetic_csv, tmp_path, capsys, no_model_loads, flags, message
):
    code = main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", *flags))
    assert code in (1, 2)
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("run_mtl.py: error:") and message in last_line  # one line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max_samples", "5000"], "max_samples=5000 must be between 1 and the 59 distinct sentences available"),
        (["--train_file", "missing.csv"], "missing.csv"),
    ],
)
def test_bad_data_fails_in_one_line_before_training(tiny_encoder_dir, synthetic_csv, tmp_path, capsys, flags, message):
    """Errors in the data are found while the data is read, after the model is built (a distillation task's teacher
    vectors need it), and before anything trains or is written."""
    out = tmp_path / "x"
    code = main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *flags))
    assert code in (1, 2)
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("run_mtl.py: error:") and message in last_line  # one line
    assert not (out / "config.json").exists()


def test_missing_corpus_folder(tmp_path, capsys):  # found when the data is read, after the model is built
    assert main(["--data_dir", str(tmp_path / "no-corpus"), "--output_dir", str(tmp_path / "o")]) in (1, 2)
    assert "no-corpus" in capsys.readouterr().err


def test_the_distillation_teacher_is_a_choice(tiny_encoder_dir, tmp_path):
    """Issue #20, open point, the distillation teacher: unset, the model as the run starts (a continued run: the
    checkpoint's encoder); `teacher:` names another."""
    from sentmtl.serving.embed import encode

    model, tokenizer = model_with(tiny_encoder_dir, [TaskSpec("d", "distillation")])
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.5)  # the model has moved away from the original encoder
    sentences = ["the film was good .", "bad ."]
    kwargs = {"precision": "fp32", "device": "cpu"}
    own = teacher_encoder(model, tokenizer, None, 64, **kwargs).encode(sentences)
    original = teacher_encoder(model, tokenizer, str(tiny_encoder_dir), 64, **kwargs).encode(sentences)
    fresh, fresh_tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir))
    np.testing.assert_allclose(own, encode(model, sentences, tokenizer, pooled=True, **kwargs), rtol=1e-6)
    np.testing.assert_allclose(original, encode(fresh, sentences, fresh_tokenizer, pooled=True, **kwargs), rtol=1e-6)
    assert not np.allclose(own, original)
    with pytest.raises(ValueError, match="teacher: only for distillation tasks"):
        RunTask.from_dict({"name": "a", "type": "regression", "teacher": "x"}, "tasks[0]")
