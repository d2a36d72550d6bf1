"""sentmtl/training/arguments.py, with model_arguments.py and data_arguments.py (parsed together): the flag
checks: one-line errors, flags that would be ignored, combinations refused, the seed configs' learning rates. The
overwrite guard on a trained folder: tests/e2e/test_run_mtl.py."""

import pytest
import yaml
from helpers import REPO_ROOT, tiny_run_flags

import sentmtl
from sentmtl.training.run import main, parse_args


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--freeze", "everything"], "--freeze 'everything' is not supported; choose one of none, all, backbone"),
        (["--pooling", "max"], "pooling='max' is not supported; choose one of mean, cls, pooler"),
        (["--dropout", "1.5"], r"dropout=1.5 must be in \[0, 1\)"),
        (["--train_file", "a.csv", "--validation_file", "b.csv", "--max_samples", "10"], "there is no split"),
        (["--backbone_learning_rate", "-1"], "--backbone_learning_rate -1.0 must be > 0"),
        (["--unpadded"], r"^--unpadded is not supported for training yet .*run_embed.py --unpadded have it\.$"),
    ],
)
def test_bad_arguments_are_one_line_errors(flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_args(flags + ["--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hub_strategy", "checkpoint"], "--hub_strategy checkpoint is not supported"),
        (["--train_file", "a.csv", "--sources", "imdb"], "--sources select"),
        (["--train_file", "a.csv", "--data_dir", "corpus/"], "--data_dir select"),
        (["--train_file", "a.csv", "--skip_bad_lines"], "--skip_bad_lines select"),
        (
            ["--train_file", "a.csv", "--validation_file", "b.csv", "--test_size", "0.3"],
            "with --validation_file there is no split",
        ),
    ],
)
def test_flags_that_would_be_ignored_are_refused(flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_args(flags + ["--output_dir", str(tmp_path)])


def test_ema_with_load_best_model_at_end_is_refused(tmp_path):
    """Issue #20, item 3: the run would end on the weight average, not the best checkpoint: refused."""
    with pytest.raises(ValueError, match="--ema_decay with --load_best_model_at_end"):
        parse_args(
            [
                "--ema_decay",
                "0.99",
                "--load_best_model_at_end",
                "true",
                "--eval_strategy",
                "epoch",
                "--save_strategy",
                "epoch",
                "--output_dir",
                str(tmp_path),
                "--use_cpu",
                "true",
            ]
        )


def test_unfreezing_is_refused_under_several_processes(tmp_path, monkeypatch):
    """Under DDP the parameters frozen at wrap time were never all-reduced once unfrozen: replicas drifted apart."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--unfreeze_backbone_at_epoch is single-process only"):
        parse_args(["--freeze_backbone", "--unfreeze_backbone_at_epoch", "1", "--output_dir", str(tmp_path)])


def test_matryoshka_with_cosine_distillation_is_refused_before_anything_loads(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "matryoshka_dims": [256, 64],
                "tasks": [
                    {"name": "d", "type": "distillation", "loss": "cosine", "data": {"train_file": "nowhere.csv"}}
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="cannot be taken on a truncated embedding"):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])


def test_the_self_distillation_weight_comes_from_a_run_file_and_waits_for_the_sizes(tmp_path, tiny_encoder_dir):
    run_file = tmp_path / "run.yaml"
    tasks = [{"name": "sts", "type": "similarity", "data": {"train_file": "nowhere.csv"}}]
    run_file.write_text(
        yaml.safe_dump({"matryoshka_dims": [256, 64], "matryoshka_self_distillation": 10, "tasks": tasks})
    )
    model_args, _, _ = parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])
    assert model_args.matryoshka_self_distillation == 10.0
    assert model_args.config_overrides()["matryoshka_self_distillation"] == 10.0  # what a fresh model is built with
    # Without sizes the weight may be for a checkpoint's: read, then checked when the model is built.
    run_file.write_text(yaml.safe_dump({"matryoshka_self_distillation": 10, "tasks": tasks}))
    model_args, _, _ = parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), **model_args.config_overrides())
    with pytest.raises(ValueError, match="matryoshka_self_distillation=-1.0 must be a finite number >= 0"):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out"), "--matryoshka_self_distillation", "-1"])


def test_seed_configs_give_the_seeds_learning_rates():
    _, _, uniform = parse_args([str(REPO_ROOT / "configs" / "seed_1000_uniform.yaml")])
    assert uniform.learning_rates() == {"backbone": 1e-5, "shared": 1e-5, "head": 1e-5, "loss_weighting": 1e-2}
    _, _, layerwise = parse_args([str(REPO_ROOT / "configs" / "seed_1000_layerwise.yaml")])
    assert layerwise.learning_rates() == {"backbone": 1e-5, "shared": 2e-5, "head": 2e-5, "loss_weighting": 1e-2}


def test_push_without_hub_model_id_is_an_argument_error(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", "--push_to_hub", "true")) == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err
