"""Run files: YAML read with flags on top (sentmtl/training/run.py), the shipped configs, and a run_config.yaml of
sentmtl 0.1 replayed (sentmtl/training/run_config.py). A run's own run_config.yaml replayed:
tests/e2e/test_run_mtl.py."""

import pytest
import yaml
from helpers import REPO_ROOT

from sentmtl.data.plan import tasks_from_flags
from sentmtl.training.run import main, parse_args


def test_yaml_gives_the_run_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_train_epochs: 2\nbackbone_learning_rate: 1e-5\npooling: cls\nmax_samples: 100\n")
    model_args, data_args, args = parse_args([str(config), "--num_train_epochs", "5", "--output_dir", str(tmp_path)])
    assert args.num_train_epochs == 5  # the flag wins
    assert args.backbone_learning_rate == 1e-5 and model_args.pooling == "cls" and data_args.max_samples == 100


def test_yaml_unknown_key_lists_the_valid_ones(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_train_epoch: 2\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_train_epoch'\]\. Valid keys: .*num_train_epochs"):
        parse_args([str(config)])


def test_unknown_yaml_key_and_missing_config_file(tmp_path, capsys, no_model_loads):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"learning_rat": 1e-4}))
    assert main([str(config)]) == 2
    assert "unknown key(s) ['learning_rat']" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: no such config file" in capsys.readouterr().err


def test_wrong_type_in_yaml_names_the_value(tmp_path, capsys, no_model_loads):
    config = tmp_path / "run.yaml"
    config.write_text("num_train_epochs: three\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(config)])
    assert exit_info.value.code == 2
    assert "invalid float value: 'three'" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_parse(config, tmp_path):
    # Into the test's own folder: the configs' output folders (output/…) may hold what `make run` trained there.
    parse_args([str(REPO_ROOT / "configs" / config), "--output_dir", str(tmp_path / "out")])


# run_config.yaml as sentmtl 0.1.0 wrote it (a --train_file run with --label_smoothing_factor 0.1).
OLD_RUN_CONFIG = """\
model_name_or_path: {encoder}
pooling: mean
embedding_size: 16
projection_init: random
normalize: true
dropout: 0.1
loss_weighting: static
classification_loss_weight: 1.0
sentiment_loss_weight: 1.0
distillation_weight: 10.0
head_logit_scale: 20.0
allow_pickle_weights: false
data_dir: null
sources: null
train_file: {train}
validation_file: null
text_column: text
label_column: sentiment
score_column: score
class_names:
- negative
- positive
test_size: null
max_samples: null
max_length: 128
skip_bad_lines: false
sts_eval_file: null
output_dir: {out}
per_device_train_batch_size: 16
num_train_epochs: 5.0
max_steps: 2
learning_rate: 5.0e-05
lr_scheduler_type: linear
warmup_steps: 0.1
optim: adamw_torch_fused
weight_decay: 0.01
adam_beta1: 0.9
adam_beta2: 0.999
adam_epsilon: 1.0e-08
gradient_accumulation_steps: 1
max_grad_norm: 1.0
label_smoothing_factor: 0.1
bf16: true  # chosen automatically: bf16 autocast is fast on this device type only where this says true
fp16: false
gradient_checkpointing: false
torch_compile: false
logging_steps: 10
disable_tqdm: true
eval_strategy: epoch
eval_steps: null
per_device_eval_batch_size: 64
save_strategy: 'no'
save_steps: 500
seed: 42
data_seed: null
use_cpu: true
train_sampling_strategy: group_by_length
backbone_learning_rate: null
shared_learning_rate: 0.0002
head_learning_rate: 0.0002
loss_weighting_learning_rate: 0.01
layerwise_lr_decay: 1.0
freeze: none
freeze_backbone_layers: 0
unfreeze_backbone_at_epoch: null
"""


def test_a_run_config_of_0_1_replays_with_the_seed_flags_as_tasks(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Issue #20, compatibility: a run_config.yaml written by sentmtl 0.1 replays, its seed flags read as tasks."""
    path = tmp_path / "run_config.yaml"
    path.write_text(OLD_RUN_CONFIG.format(encoder=tiny_encoder_dir, train=synthetic_csv, out=tmp_path / "out"))
    model_args, data_args, training_args = parse_args([str(path)])
    tasks = {task.spec.name: task for task in tasks_from_flags(model_args, data_args, training_args)}
    assert tasks["classification"].spec.label_smoothing == 0.1 and tasks["distillation"].spec.loss_weight == 10.0
    assert tasks["classification"].data.data == {"train_file": str(synthetic_csv)}
    assert tasks["sentiment"].options["score_from"] == "classification"  # the file has no score column: derived
