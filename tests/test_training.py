import json
import math
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, synthetic_rows, tiny_run_flags
from transformers import TrainerCallback

from sentmtl.data.batching import prepare
from sentmtl.data.plan import tasks_from_flags
from sentmtl.data.sources import build_sources
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import task_io
from sentmtl.training.arguments import SentMtlTrainingArguments
from sentmtl.training.callbacks import FreezeCallback
from sentmtl.training.run import main, parse_args, run
from sentmtl.training.trainer import SentMtlTrainer, build_param_groups


def training_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        logging_steps=1,
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    values.update(overrides)
    return SentMtlTrainingArguments(**values)


def tokenized_synthetic(tokenizer, n=32, tasks=None):
    """The seed's two tasks' targets on synthetic sentences, through the documented Python path (`prepare`)."""
    rows = synthetic_rows(n)
    dataset = datasets.Dataset.from_dict({**rows, "score": [float(label) for label in rows["label"]]})
    tasks = tasks or [
        TaskSpec("classification", "classification", labels=["negative", "positive"]),
        TaskSpec("sentiment", "score"),
    ]
    return prepare(dataset, tasks, tokenizer, max_length=32)


# -- parameter groups ------------------------------------------------------------------------------------------


def test_every_trainable_parameter_in_exactly_one_group(tiny_model, tmp_path):
    groups = build_param_groups(tiny_model, training_args(tmp_path, weight_decay=0.01))
    ids = [id(p) for group in groups for p in group["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in tiny_model.parameters()}
    for group in groups:
        expected = 0.0 if group["name"].endswith("no_decay") else 0.01
        assert group["weight_decay"] == expected
        assert all((p.ndim < 2) == group["name"].endswith("no_decay") for p in group["params"])


def test_groups_take_the_requested_learning_rates(tiny_model, tmp_path):
    args = training_args(tmp_path, backbone_learning_rate=1e-5, shared_learning_rate=2e-5, head_learning_rate=3e-5)
    lr = {group["name"]: group["lr"] for group in build_param_groups(tiny_model, args)}
    assert lr["backbone.layer1"] == lr["backbone.layer2"] == lr["backbone.embeddings"] == 1e-5
    assert lr["shared_projection"] == 2e-5 and lr["heads"] == 3e-5
    args = training_args(tmp_path, learning_rate=4e-5, shared_learning_rate=None, head_learning_rate=None)
    uniform = {group["lr"] for group in build_param_groups(tiny_model, args)}
    assert uniform == {4e-5}  # unset layer-wise LRs fall back to --learning_rate: the seed's uniform run


def test_seed_configs_give_the_seeds_learning_rates():
    _, _, uniform = parse_args([str(REPO_ROOT / "configs" / "seed_1000_uniform.yaml")])
    assert uniform.learning_rates() == {"backbone": 1e-5, "shared": 1e-5, "head": 1e-5, "loss_weighting": 1e-2}
    _, _, layerwise = parse_args([str(REPO_ROOT / "configs" / "seed_1000_layerwise.yaml")])
    assert layerwise.learning_rates() == {"backbone": 1e-5, "shared": 2e-5, "head": 2e-5, "loss_weighting": 1e-2}


def test_llrd_decays_downwards(tiny_model, tmp_path):
    args = training_args(tmp_path, backbone_learning_rate=1e-4, layerwise_lr_decay=0.5)
    lr = {group["name"]: group["lr"] for group in build_param_groups(tiny_model, args)}
    # 2 layers: layer2 = 1e-4, layer1 = 1e-4 * 0.5, embeddings = 1e-4 * 0.5^2
    assert lr["backbone.layer2"] == pytest.approx(1e-4)
    assert lr["backbone.layer1"] == pytest.approx(5e-5)
    assert lr["backbone.embeddings"] == pytest.approx(2.5e-5)


def test_merged_groups_hold_each_parameter_once_with_its_lr_and_decay(tiny_model, tmp_path):
    from sentmtl.training.trainer import merge_param_groups

    args = training_args(tmp_path, backbone_learning_rate=1e-4, layerwise_lr_decay=0.5, weight_decay=0.01)
    groups = build_param_groups(tiny_model, args)
    merged = merge_param_groups(groups)
    assert len(merged) == len({(g["lr"], g["weight_decay"]) for g in groups}) < len(groups)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    after = {id(p): (g["lr"], g["weight_decay"]) for g in merged for p in g["params"]}
    assert after == setting and sum(len(g["params"]) for g in merged) == len(setting)
    assert sorted(name for g in merged for name in g["members"]) == sorted(g["name"] for g in groups)


def test_merged_groups_train_the_same_loss_curve(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """Merging the optimizer groups that share (LR, weight decay) changes nothing but the launch count."""
    import sentmtl.training.trainer

    curves = []
    for merge in (True, False):
        if not merge:
            monkeypatch.setattr(sentmtl.training.trainer, "merge_param_groups", lambda groups: groups)
        flags = tiny_run_flags(
            tiny_encoder_dir,
            synthetic_csv,
            tmp_path / f"merge_{merge}",
            "--logging_steps",
            "1",
            "--bf16",
            "false",
            "--eval_strategy",
            "no",
        )
        result = run(*parse_args(flags))
        curves.append([entry["loss"] for entry in result.log_history if "loss" in entry])
    assert len(curves[0]) >= 8
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)


def test_frozen_parameters_are_left_out(tiny_model, tmp_path):
    tiny_model.freeze("backbone")
    names = {group["name"] for group in build_param_groups(tiny_model, training_args(tmp_path))}
    assert not any(name.startswith("backbone") for name in names)
    # ... unless the backbone is scheduled to unfreeze, when it must already be in the optimizer.
    args = training_args(tmp_path, freeze="backbone", unfreeze_backbone_at_epoch=1)
    assert any(g["name"].startswith("backbone") for g in build_param_groups(tiny_model, args))


# -- freezing --------------------------------------------------------------------------------------------------


PARTS = {
    "backbone": lambda name: name.startswith("encoder."),
    "classification_head": lambda name: name.startswith("classification_head."),
    "sentiment_head": lambda name: name.startswith("sentiment_head."),
}


@pytest.mark.parametrize("freeze", ["backbone", "classification_head", "sentiment_head"])
def test_frozen_weights_stay_bit_identical_and_the_rest_train(freeze, tiny_model, tiny_tokenizer, tmp_path):
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, freeze=freeze, learning_rate=1e-3, max_steps=3),
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
        callbacks=[FreezeCallback(freeze)],
    )
    is_frozen = PARTS[freeze]
    assert all(p.requires_grad != is_frozen(n) for n, p in tiny_model.named_parameters())
    trainer.train()
    for name, p in tiny_model.named_parameters():
        if is_frozen(name):
            assert torch.equal(p, before[name]), name
    changed = [n for n, p in tiny_model.named_parameters() if not is_frozen(n) and not torch.equal(p, before[n])]
    assert "shared_projection.weight" in changed and len(changed) >= 3


def test_freeze_lower_backbone_layers(tiny_model):
    FreezeCallback(freeze_backbone_layers=1).apply(tiny_model)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for n in trainable)
    assert any(n.startswith("encoder.encoder.layer.1.") for n in trainable)
    with pytest.raises(ValueError, match="freeze_backbone_layers=5 must be between 0 and the encoder's 2 layers"):
        tiny_model.freeze_lower_backbone(5)


def test_gradual_unfreezing_trains_the_backbone_after_the_given_epoch(tiny_model, tiny_tokenizer, tmp_path):
    embeddings = tiny_model.encoder.embeddings.word_embeddings.weight
    args = training_args(
        tmp_path, freeze="backbone", unfreeze_backbone_at_epoch=1, num_train_epochs=2, learning_rate=1e-3
    )
    callback = FreezeCallback.from_args(args)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_epoch_end(self, *a, **k):
            snapshots.append(embeddings.detach().clone())

    before = embeddings.detach().clone()
    SentMtlTrainer(
        model=tiny_model,
        args=args,
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
        callbacks=[callback, Snapshot()],
    ).train()
    assert torch.equal(snapshots[0], before)  # epoch 0: frozen
    assert not torch.equal(snapshots[1], before)  # epoch 1: training


# -- metrics ---------------------------------------------------------------------------------------------------


def test_task_metrics_against_hand_computed_values():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    # predicted:        0            1            1            0            1            0
    labels = np.array([0, 1, 0, 1, 1, 0])
    domains = np.array([0, 0, 1, 1, 2, 2])
    scores = labels.astype(float)
    predicted_scores = np.array([0.2, 0.9, 0.6, 0.4, 0.8, 0.1])
    task_a = TaskSpec("classification", "classification", labels=["negative", "positive"])
    m = task_io(task_a).metrics(task_a, logits, labels, domains, ["amazon", "imdb", "yelp"])
    # TP = 2 (rows 1, 4), FP = 1 (row 2), FN = 1 (row 3), TN = 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (
        m["precision"] == pytest.approx(2 / 3)
        and m["recall"] == pytest.approx(2 / 3)
        and m["f1"] == pytest.approx(2 / 3)
    )
    assert m["macro_f1"] == pytest.approx(2 / 3)  # both classes: P = R = 2/3
    assert (m["confusion_0_0"], m["confusion_0_1"], m["confusion_1_0"], m["confusion_1_1"]) == (2, 1, 1, 2)
    assert (m["accuracy_amazon"], m["accuracy_imdb"], m["accuracy_yelp"]) == (1.0, 0.0, 1.0)
    task_b = TaskSpec("sentiment", "score")
    b = task_io(task_b).metrics(task_b, np.log(predicted_scores / (1 - predicted_scores)), scores)
    m = {**m, **{f"sentiment_{k}": v for k, v in b.items()}}
    assert m["sentiment_mse"] == pytest.approx(np.mean((predicted_scores - scores) ** 2))
    assert m["sentiment_mae"] == pytest.approx(np.mean(np.abs(predicted_scores - scores)))
    assert m["sentiment_accuracy"] == pytest.approx(4 / 6)  # rows 2 and 3 wrong
    assert m["sentiment_roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (positive, negative) pairs ordered right
    assert m["sentiment_brier"] == pytest.approx(m["sentiment_mse"])
    # Calibration: softmax top-label confidences, log loss of the true class, and 15-bin ECE.
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    true_p = probabilities[np.arange(6), labels]
    assert m["log_loss"] == pytest.approx(-np.log(true_p).mean())
    assert m["confidence"] == pytest.approx(probabilities.max(1).mean())
    assert 0 < m["ece"] <= 1


# -- configs and the CLI ---------------------------------------------------------------------------------------


def test_binary_precision_recall_f1_name_their_class():
    """Issue 31, finding 5: with two classes precision / recall / F1 are class id 1's whatever its name; the keys, the
    table and the card now name it (the unnamed keys stay as aliases)."""
    from sentmtl.training.report import format_metrics_table

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predicted 0, 1, 1, 0
    labels = np.array([0, 1, 0, 0])  # id 1 predicted twice, right once: its precision 1/2, recall 1
    task = TaskSpec("tone", "classification", labels=["good", "bad"])  # id 1 is "bad", not a positive class
    m = task_io(task).metrics(task, logits, labels)
    assert m["precision_bad"] == m["precision"] == pytest.approx(1 / 2)
    assert m["recall_bad"] == m["recall"] == 1.0 and m["f1_bad"] == m["f1"] == pytest.approx(2 / 3)
    table = format_metrics_table({f"eval_tone_{k}": v for k, v in m.items()}, [task])
    assert "f1_bad" in table and "precision_bad" in table and " f1 " not in table  # the card uses the same rows
    assert task_io(task).shown_for(TaskSpec("t", "classification", labels=["a", "b", "c"])).count("f1") == 1  # macro


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


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_parse(config, tmp_path):
    # Into the test's own folder: the configs' output folders (output/…) may hold what `make run` trained there.
    parse_args([str(REPO_ROOT / "configs" / config), "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--freeze", "everything"], "--freeze 'everything' is not supported; choose one of none, all, backbone"),
        (["--pooling", "max"], "pooling='max' is not supported; choose one of mean, cls, pooler"),
        (["--dropout", "1.5"], r"dropout=1.5 must be in \[0, 1\)"),
        (["--train_file", "a.csv", "--validation_file", "b.csv", "--max_samples", "10"], "there is no split"),
        (["--backbone_learning_rate", "-1"], "--backbone_learning_rate -1.0 must be > 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_args(flags + ["--output_dir", str(tmp_path)])


def test_tiny_end_to_end_run_leaves_every_output(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out)) == 0
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "eval_results.json",
        "train_results.json",
        "run_config.yaml",
        "loss_curve.png",
        "confusion_classification.png",
        "reliability_classification.png",
        "reliability_sentiment.png",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "eval_results.json").read_text())
    assert {
        "eval_classification_accuracy",
        "eval_classification_precision",
        "eval_classification_recall",
        "eval_classification_f1",
        "eval_sentiment_mse",
        "eval_distillation_loss",
        "eval_classification_ece",
        "eval_classification_log_loss",
        "eval_sentiment_brier",
        "eval_sentiment_ece",
    } <= set(results)
    printed = capsys.readouterr().out
    assert (
        "classification  accuracy" in printed
        and "classification  ece" in printed
        and "sentiment       brier" in printed
    )
    # The saved run config repeats the run (elsewhere: the trained model in `out` is not overwritten).
    _, _, args = parse_args([str(out / "run_config.yaml"), "--output_dir", str(tmp_path / "again")])
    assert args.learning_rate == 1e-3 and args.num_train_epochs == 2
    with pytest.raises(ValueError, match="already holds a trained model"):
        parse_args([str(out / "run_config.yaml")])


def test_freeze_all_evaluates_without_training(tiny_encoder_dir, synthetic_csv, tmp_path, caplog):
    out = tmp_path / "frozen"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--freeze", "all")) == 0
    assert (out / "eval_results.json").is_file() and not (out / "train_results.json").exists()
    assert "nothing to train, evaluating only" in caplog.text


def test_same_seed_same_metrics(tiny_encoder_dir, synthetic_csv, tmp_path):
    main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "a"))
    main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "b"))
    a, b = (json.loads((tmp_path / run / "eval_results.json").read_text()) for run in "ab")
    for key in ("eval_loss", "eval_classification_accuracy", "eval_sentiment_mse"):
        assert a[key] == b[key]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--freeze_backbone"]])
def test_two_process_accelerate_run(tiny_encoder_dir, synthetic_csv, tmp_path, extra):
    out = tmp_path / "ddp"
    # `--multi_gpu` makes accelerate start the processes with torchrun; on a machine without GPUs they run on the
    # CPU over gloo. (`--cpu --num_processes 2` starts ONE process unless it runs under mpirun.)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "run_mtl.py",
        *tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra),
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"eval_classification_accuracy", "eval_classification_f1"} <= set(
        json.loads((out / "eval_results.json").read_text())
    )
    train = json.loads((out / "train_results.json").read_text())
    # 2 processes × 8 per device = 16 sentences per step (one process would take 8 per step).
    model_args, data_args, training_args_ = parse_args(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x"))
    sources = build_sources(tasks_from_flags(model_args, data_args, training_args_), data_args, 42)
    n_train = sources[0].train.num_rows
    assert train["global_step"] == 2 * math.ceil(n_train / 16)
    backbone_frozen = train["trainable_parameters"] < train["total_parameters"]
    assert backbone_frozen == bool(extra)


@pytest.mark.real_encoder
@pytest.mark.slow
def test_real_encoder_on_a_corpus_slice_lands_well_above_chance(data_dir, tmp_path):
    out = tmp_path / "real"
    flags = [
        "--data_dir",
        str(data_dir),
        "--max_samples",
        "400",
        "--num_train_epochs",
        "2",
        "--output_dir",
        str(out),
        "--backbone_learning_rate",
        "5e-5",
        "--shared_learning_rate",
        "5e-4",
        "--head_learning_rate",
        "5e-4",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
    ]
    assert main(flags) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_classification_accuracy"] >= 0.8, results


def test_fast_path_trains_to_the_same_place_as_the_plain_one(tiny_encoder_dir, synthetic_csv, tmp_path):
    """The fast default (bf16 autocast, length-grouped batches) against fp32 with random batches."""
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    assert SentMtlTrainingArguments(output_dir=str(tmp_path), bf16=True).use_cpu  # no GPU: bf16 autocast on the CPU
    main(
        tiny_run_flags(
            tiny_encoder_dir, synthetic_csv, tmp_path / "fp32", "--bf16", "false", "--train_sampling_strategy", "random"
        )
    )
    main(
        tiny_run_flags(
            tiny_encoder_dir,
            synthetic_csv,
            tmp_path / "bf16",
            "--bf16",
            "true",
            "--train_sampling_strategy",
            "group_by_length",
        )
    )
    fp32, bf16 = (json.loads((tmp_path / run / "eval_results.json").read_text()) for run in ("fp32", "bf16"))
    assert np.isfinite(bf16["eval_loss"])
    assert abs(bf16["eval_loss"] - fp32["eval_loss"]) < 0.1


def test_task_batches_are_seeded_per_epoch(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """The Trainer must hand every epoch to the sampler (else each epoch would repeat the first one's order)."""
    from sentmtl.data.sampler import TaskBatchSampler

    epochs = []
    original = TaskBatchSampler.set_epoch
    monkeypatch.setattr(
        TaskBatchSampler, "set_epoch", lambda self, epoch: (epochs.append(int(epoch)), original(self, epoch))
    )
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "o", "--num_train_epochs", "3")) == 0
    assert list(dict.fromkeys(epochs)) == [0, 1, 2]  # (both the Trainer and accelerate pass it on)


def test_a_checkpoint_from_before_merged_groups_is_refused_with_the_reason(tiny_encoder_dir, synthetic_csv, tmp_path):
    out = tmp_path / "run"
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--eval_strategy",
        "no",
    )
    assert main(flags) == 0
    optimizer_file = out / "checkpoint-1" / "optimizer.pt"
    state = torch.load(optimizer_file, weights_only=True)
    for group in state["param_groups"]:  # as sentmtl 0.2 saved them: a name, no members
        group.pop("members")
    torch.save(state, optimizer_file)
    with pytest.raises(ValueError, match="its optimizer predates merged parameter groups"):
        run(*parse_args([*flags, "--resume_from_checkpoint", str(out / "checkpoint-1"), "--max_steps", "3"]))


def test_getitems_reads_a_batch_as_getitem_does_across_parts():
    """`MultiSourceDataset.__getitems__` (one read per part and batch) returns what row-by-row reading returns, in the
    order asked, across parts."""
    from sentmtl.data.batching import MultiSourceDataset

    first = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3], [4, 5, 6]], "target__a": [0.5, 1.0, 0.0]})
    second = datasets.Dataset.from_dict({"input_ids": [[7], [8, 9]], "target__b": [[0.25, 0.5], [0.75, 1.0]]})
    dataset = MultiSourceDataset([first, second])
    indices = [4, 0, 2, 3, 1]
    assert dataset.__getitems__(indices) == [dataset[i] for i in indices]
    # The DataLoader uses it: a batch sampler's batch arrives as those rows.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[indices], collate_fn=lambda rows: rows)
    assert next(iter(loader)) == [dataset[i] for i in indices]
