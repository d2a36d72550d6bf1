"""Whole runs of run_mtl.py on the tiny encoder (`main` / `run`, seconds to tens of seconds each), grouped by the
module whose behaviour they pin: what a run leaves and replays, class names and tasks: files through a run, the
trainer's loss and checkpoints over real steps, caches and streams across runs, continuing, exporting and pushing a
trained model, and what the folder one run trained (conftest's `trained_dir`) holds, loads, serves and exports. The
checks of the same modules that need no whole run are in tests/<layer>/test_<module>.py."""

import csv
import json
import math
import os
import re
import signal

import numpy as np
import pytest
import torch
import yaml
from helpers import (
    ONNX_SENTENCES,
    POSITIVE_WORDS,
    SHARING_SENTENCES,
    TOPICS,
    cosine,
    exact_flags,
    padded_batch,
    retrieval_flags,
    retrieval_run_file,
    run_results,
    skip_without_onnx,
    stream_flags,
    stream_run_file,
    synthetic_rows,
    tiny_run_flags,
    torch_outputs,
    write_csv,
)
from transformers import (
    AutoModel,
)

import sentmtl
import sentmtl.data.columns
import sentmtl.serving.embed as embed_module
from sentmtl.data.batching import MultiTaskCollator
from sentmtl.data.sampler import TaskBatchSampler
from sentmtl.serving.hub import files_to_upload, push_folder
from sentmtl.serving.onnx_export import FILES, MANIFEST
from sentmtl.serving.onnx_runtime import OnnxSentMtl
from sentmtl.training.arguments import DataArguments, SentMtlTrainingArguments
from sentmtl.training.run import main, parse_args, run
from sentmtl.training.trainer import SentMtlTrainer

# -- training/run.py: what a run leaves, class names, tasks: files ---------------------------------------------------


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


def test_same_seed_same_metrics(tiny_encoder_dir, synthetic_csv, tmp_path):
    main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "a"))
    main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "b"))
    a, b = (json.loads((tmp_path / run / "eval_results.json").read_text()) for run in "ab")
    for key in ("eval_loss", "eval_classification_accuracy", "eval_sentiment_mse"):
        assert a[key] == b[key]


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


@pytest.fixture
def three_class_csv(tmp_path):
    rows = synthetic_rows(60)
    names = ["negative", "neutral", "positive"]
    lines = ["text,sentiment"]
    for i, (sentence, label) in enumerate(zip(rows["sentence"], rows["label"])):
        lines.append(f"{sentence if i % 3 else 'the plot was fine .'},{names[2 * label if i % 3 else 1]}")
    path = tmp_path / "three.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_class_names_reach_config_metrics_plot_and_card(tiny_encoder_dir, three_class_csv, tmp_path):
    """`--class_names` never reached the model (always 2 labels, negative/positive), metrics assumed binary."""
    out = tmp_path / "k3"
    assert (
        main(tiny_run_flags(tiny_encoder_dir, three_class_csv, out, "--class_names", "negative", "neutral", "positive"))
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    metrics = run_results(out, "eval_results.json")
    cells = [[metrics[f"eval_classification_confusion_{i}_{j}"] for j in range(3)] for i in range(3)]
    assert sum(map(sum, cells)) > 0  # (the held-out rows: 20% of the near-duplicate groups)
    assert "eval_classification_macro_f1" in metrics
    assert (out / "confusion_classification.png").is_file()
    assert "classification over negative, neutral, positive" in (out / "README.md").read_text()
    model, _ = sentmtl.load_model_and_tokenizer(str(out))
    assert model.classification_head.out_features == 3


def test_class_names_must_match_the_corpus_or_a_continued_checkpoint(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    with pytest.raises(ValueError, match="the UCI corpus has two classes"):
        parse_args(["--class_names", "a", "b", "c", "--output_dir", str(tmp_path)])
    trained = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, trained)) == 0
    numeric = tmp_path / "ids.csv"  # label ids, so the file reads under any two names
    numeric.write_text(synthetic_csv.read_text().replace(",negative", ",0").replace(",positive", ",1"))
    flags = tiny_run_flags(trained, numeric, tmp_path / "again", "--class_names", "bad", "good")
    flags.remove("--embedding_size"), flags.remove("16")  # a checkpoint fixes its own size
    assert main(flags) == 1
    assert (
        "has classification with classes ['negative', 'positive'] for 'classification', not a classification task "
        "with classes ['bad', 'good']" in capsys.readouterr().err
    )


@pytest.fixture
def two_datasets(tmp_path):
    """A 3-class file and a pair-similarity file: two tasks, each with its own data."""
    rows = synthetic_rows(48)
    three = tmp_path / "three.csv"
    three.write_text(
        "text,tone\n"
        + "".join(f"{s},{['neg', 'pos'][label]}\n" for s, label in zip(rows["sentence"], rows["label"]))
        + "".join(f"the plot was fine number {i} .,mid\n" for i in range(12))
    )
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as handle:
        # Disjoint pairs: a chain (s0, s1), (s1, s2), … would be one group for the leak-free split.
        for i, (a, b) in enumerate(zip(rows["sentence"][::2], rows["sentence"][1::2])):
            handle.write(json.dumps({"a": a, "b": b, "sim": round((i % 5) / 4, 2)}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "num_train_epochs": 2,
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-3,
                "task_sampling": "round_robin",
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["neg", "mid", "pos"],
                        "data": {"train_file": str(three)},
                        "text_column": "text",
                        "label_column": "tone",
                        "head_learning_rate": 5e-3,
                    },
                    {
                        "name": "sim",
                        "type": "similarity",
                        "data": {"train_file": str(pairs)},
                        "text_column": "a",
                        "text_pair_column": "b",
                        "label_column": "sim",
                        "loss": "cosine_mse",
                    },
                    {
                        "name": "keep",
                        "type": "distillation",
                        "data": {"train_file": str(three)},
                        "text_column": "text",
                        "loss_weight": 5,
                    },
                ],
            }
        )
    )
    return config


def tiny_task_flags(tiny_encoder_dir, out, *extra):
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]


def test_a_run_file_with_tasks_trains_each_on_its_own_data(tiny_encoder_dir, two_datasets, tmp_path, capsys):
    from sentmtl.training.run import main

    out = tmp_path / "run"
    assert main([str(two_datasets), *tiny_task_flags(tiny_encoder_dir, out)]) == 0
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {
        "eval_tone_accuracy",
        "eval_tone_confusion_1_1",
        "eval_sim_spearman",
        "eval_keep_structure_spearman",
        "eval_loss",
    } <= set(metrics)
    config = json.loads((out / "config.json").read_text())
    assert [t["name"] for t in config["tasks"]] == ["tone", "sim", "keep"]
    assert config["id2label"] == {"0": "neg", "1": "mid", "2": "pos"}
    assert (out / "confusion_tone.png").is_file()
    card = (out / "README.md").read_text()
    assert "### Task `tone`" in card and "### Task `sim`" in card and "classification over neg, mid, pos" in card
    # The run file is replayed from run_config.yaml, tasks included.
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert [t["name"] for t in saved["tasks"]] == ["tone", "sim", "keep"]
    from sentmtl.training.run import parse_args

    _, data_args, _ = parse_args([str(out / "run_config.yaml"), "--output_dir", str(tmp_path / "again")])
    assert [t.spec.name for t in data_args.tasks] == ["tone", "sim", "keep"]


def test_run_file_task_errors_name_the_field_file_and_column(tiny_encoder_dir, two_datasets, tmp_path, capsys):
    from sentmtl.training.run import main

    bad = yaml.safe_load(two_datasets.read_text())
    bad["tasks"][0]["colour"] = "red"
    (tmp_path / "bad1.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad1.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o1")]) == 2
    assert "tasks[0]: unknown task field(s) ['colour']; valid:" in capsys.readouterr().err
    bad["tasks"][0].pop("colour")
    bad["tasks"][0]["label_column"] = "mood"
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad2.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "three.csv (train): no column 'mood' for task 'tone'" in err and "set its label_column" in err
    assert (
        main([str(two_datasets), "--class_names", "a", "b", *tiny_task_flags(tiny_encoder_dir, tmp_path / "o3")]) == 2
    )
    assert "--class_names would be ignored. Move them into the tasks." in capsys.readouterr().err
    bad["tasks"][0]["label_column"] = "tone"
    bad["tasks"][1]["head_learning_rate"] = 1e-3  # a similarity task has no head: the LR would apply to nothing
    (tmp_path / "bad3.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad3.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o4")]) == 2
    assert "tasks[1]: head_learning_rate: a similarity task has no head" in capsys.readouterr().err


def test_a_tasks_label_smoothing_survives_the_trainer(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Issue #20, item 2: a task's own label smoothing reaches the model and run_config.yaml; a run-wide
    --label_smoothing_factor beside tasks: is refused."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["negative", "positive"],
                        "label_smoothing": 0.2,
                        "data": {"train_file": str(synthetic_csv)},
                        "text_column": "text",
                        "label_column": "sentiment",
                    }
                ]
            }
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
                "--max_steps",
                "2",
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
    assert json.loads((out / "config.json").read_text())["tasks"][0]["label_smoothing"] == 0.2
    assert yaml.safe_load((out / "run_config.yaml").read_text())["tasks"][0]["label_smoothing"] == 0.2
    # A run-wide --label_smoothing_factor beside tasks is refused, not silently applied or dropped.
    assert main([str(run_file), "--label_smoothing_factor", "0.1", "--output_dir", str(tmp_path / "o2")]) == 2


# -- training/run_config.py: the saved run replays -------------------------------------------------------------------


def test_run_config_replays_the_run(tiny_encoder_dir, synthetic_csv, tmp_path):
    """run_config.yaml dropped data_seed, eval_steps, save_steps, adam_* and gradient_checkpointing, and did not say
    that bf16 had been chosen automatically."""
    out = tmp_path / "run"
    extra = [
        "--data_seed",
        "0",
        "--eval_steps",
        "3",
        "--save_steps",
        "7",
        "--adam_beta2",
        "0.98",
        "--adam_epsilon",
        "1e-7",
        "--gradient_checkpointing",
        "true",
        "--label_smoothing_factor",
        "0.05",
    ]
    flags = [f for f in tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra)]
    assert main(flags) == 0
    text = (out / "run_config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert {
        "data_seed": 0,
        "eval_steps": 3,
        "save_steps": 7,
        "adam_beta2": 0.98,
        "adam_epsilon": 1e-7,
        "gradient_checkpointing": True,
        "label_smoothing_factor": 0.05,
    }.items() <= saved.items()
    assert "hub_token" not in saved and "logging_dir" not in saved
    assert [line for line in text.splitlines() if line.startswith("bf16:")][0].endswith(
        "chosen automatically: bf16 autocast is fast on this device type only where this says true"
    )
    model_args, data_args, args = parse_args([str(out / "run_config.yaml"), "--output_dir", str(tmp_path / "again")])
    assert (args.data_seed, args.eval_steps, args.adam_beta2, args.gradient_checkpointing) == (0, 3, 0.98, True)
    assert data_args.train_file == str(synthetic_csv) and model_args.embedding_size == 16


# -- training/arguments.py: the overwrite guard ----------------------------------------------------------------------


def test_trained_output_dir_is_not_overwritten_without_the_flag(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out)) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--learning_rate", "5e-3")) == 2
    assert "already holds a trained model (config.json). Pass --overwrite_output_dir" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert (
        main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--learning_rate", "5e-3", "--overwrite_output_dir"))
        == 0
    )
    assert (out / "model.safetensors").read_bytes() != before


def test_resume_auto_without_a_checkpoint_keeps_the_overwrite_guard(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    """`--resume_from_checkpoint auto` skipped the guard even with nothing to resume: it trained over the model."""
    out = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out)) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--resume_from_checkpoint", "auto")) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


# -- training/trainer.py: the loss, the batches and the checkpoints over real steps ----------------------------------


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


def test_gradient_accumulation_does_not_scale_the_loss(tiny_encoder_dir, synthetic_csv, tmp_path):
    """The model's `**kwargs` forward made the Trainer skip its division by the accumulation steps: 8 × 2 logged
    (and back-propagated) twice the loss of 16 × 1 on the same data."""
    assert (
        main(exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "16", "--per_device_train_batch_size", "16")) == 0
    )
    assert (
        main(
            exact_flags(
                tiny_encoder_dir,
                synthetic_csv,
                tmp_path / "8x2",
                "--per_device_train_batch_size",
                "8",
                "--gradient_accumulation_steps",
                "2",
            )
        )
        == 0
    )
    single, accumulated = run_results(tmp_path / "16"), run_results(tmp_path / "8x2")
    assert single["global_step"] == accumulated["global_step"]
    # Equal up to the encoder's own dropout, whose masks differ between 16 rows and 2 × 8 (the bug gave 2×).
    assert accumulated["train_loss"] == pytest.approx(single["train_loss"], rel=2e-2)
    assert run_results(tmp_path / "8x2", "eval_results.json")["eval_loss"] == pytest.approx(
        run_results(tmp_path / "16", "eval_results.json")["eval_loss"], rel=2e-2
    )


def test_task_batches_are_seeded_per_epoch(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """The Trainer must hand every epoch to the sampler (else each epoch would repeat the first one's order)."""

    epochs = []
    original = TaskBatchSampler.set_epoch
    monkeypatch.setattr(
        TaskBatchSampler, "set_epoch", lambda self, epoch: (epochs.append(int(epoch)), original(self, epoch))
    )
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "o", "--num_train_epochs", "3")) == 0
    assert list(dict.fromkeys(epochs)) == [0, 1, 2]  # (both the Trainer and accelerate pass it on)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys, known_handlers
):
    from sentmtl.model.modeling_sentmtl import SentMtlModel

    original = SentMtlModel.combine_losses
    calls = {"n": 0}

    def poisoned(self, task_losses, tasks=None, labelled=None):
        loss = original(self, task_losses, tasks, labelled)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 6:  # the 6th training step diverges
                return loss * float("nan")
        return loss

    monkeypatch.setattr(SentMtlModel, "combine_losses", poisoned)
    out = tmp_path / "nan"
    flags = tiny_run_flags(
        tiny_encoder_dir, synthetic_csv, out, "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no"
    )
    assert main(flags) == 1
    err = capsys.readouterr().err
    assert "training stopped at step 6 of 14" in err and "the loss is nan" in err
    assert f"The last good checkpoint is {out / 'checkpoint-4'}" in err
    assert not (out / "config.json").exists()
    assert signal.getsignal(signal.SIGINT) is known_handlers  # the handler from before is back after the failure
    model, _ = sentmtl.load_model_and_tokenizer(str(out / "checkpoint-4"))
    assert all(bool(p.isfinite().all()) for p in model.parameters())


def test_resuming_a_checkpoint_whose_optimizer_groups_differ_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Issue #20, compatibility: a checkpoint whose optimizer has other parameter groups is refused, naming them."""
    out = tmp_path / "run"
    flags = [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(out),
    ]
    assert main(flags) == 0
    optimizer_file = out / "checkpoint-1" / "optimizer.pt"
    state = torch.load(optimizer_file, weights_only=True)
    state["param_groups"][-1]["name"] = "heads.from_another_layout"
    torch.save(state, optimizer_file)
    with pytest.raises(ValueError, match=r"its optimizer has the parameter groups .*heads.from_another_layout"):
        from sentmtl.training.run import run

        run(*parse_args([*flags, "--resume_from_checkpoint", str(out / "checkpoint-1"), "--max_steps", "3"]))


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


# -- training/checkpoints.py: the atomic final save ------------------------------------------------------------------


def test_a_failed_final_save_leaves_the_previous_model_intact(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out)) == 0
    before = sentmtl.encode(str(out), ["the movie was great ."])

    def failing_save(self, output_dir=None, _internal_call=False):
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "model.safetensors"), "wb") as handle:
            handle.write(b"half a file")  # the disk fills up half-way through the weights
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SentMtlTrainer, "save_model", failing_save)
    assert (
        main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--learning_rate", "5e-3", "--overwrite_output_dir"))
        == 1
    )
    assert "No space left on device" in capsys.readouterr().err
    np.testing.assert_array_equal(sentmtl.encode(str(out), ["the movie was great ."]), before)


# -- training/callbacks.py: freed memory handed back -----------------------------------------------------------------


def test_training_hands_freed_memory_back_every_few_steps(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """The heap is trimmed every RELEASE_EVERY_STEPS steps of a run (without the cycle collector, too slow to run
    that often), and once after preparing the data and once after training (with it)."""
    import sentmtl.data.run_data as run_data
    import sentmtl.training.callbacks as callbacks
    import sentmtl.training.stopping as stopping
    from sentmtl.utils.memory import RELEASE_EVERY_STEPS

    during, around = [], []
    monkeypatch.setattr(callbacks, "release_memory", lambda collect=True: during.append(collect))
    monkeypatch.setattr(run_data, "release_memory", lambda collect=True: around.append(collect))
    monkeypatch.setattr(stopping, "release_memory", lambda collect=True: around.append(collect))
    steps = 2 * RELEASE_EVERY_STEPS + 3
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "run", "--max_steps", str(steps))) == 0
    assert during == [False, False]  # after steps 10 and 20 of 23
    assert around == [True, True]
    with pytest.raises(ValueError, match="every_steps=0"):
        callbacks.ReleaseMemoryCallback(0)


# -- data/: teachers, caches, streams and contrastive sources in a run -----------------------------------------------


def test_teacher_vectors_follow_the_runs_precision(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """Issue #20, item 12: the distillation teacher embeds at the run's precision, on the run's device."""
    import sentmtl.serving.embed as embed_module

    seen = []
    original = embed_module.encode

    def spy(*args, **kwargs):
        seen.append((kwargs.get("precision"), str(kwargs.get("device"))))
        return original(*args, **kwargs)

    monkeypatch.setattr(embed_module, "encode", spy)  # the teacher's (sentmtl.data.teacher_cache.Teacher.from_model)
    flags = [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--max_steps",
        "1",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
    ]
    for bf16, expected in (("false", "fp32"), ("true", "bf16")):
        seen.clear()
        assert main([*flags, "--bf16", bf16, "--output_dir", str(tmp_path / bf16)]) == 0
        assert seen and all(precision == expected and device == "cpu" for precision, device in seen)


def test_a_streamed_teacher_is_the_starting_encoder_frozen(tiny_encoder_dir, tmp_path, stream_files):
    """The targets of rows read late in the run are the starting encoder's, not the trained model's."""
    from sentmtl.training.run import parse_args, run

    run_file = stream_run_file(tmp_path, *stream_files)
    seen = []
    original = embed_module.encode

    def spy(model, *args, **kwargs):
        seen.append(float(sum(p.detach().double().sum() for p in model.encoder.parameters())))
        return original(model, *args, **kwargs)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(embed_module, "encode", spy)
    monkeypatch.setattr(sentmtl.data.columns, "STREAM_ROWS", 8)  # read ahead by one training batch
    try:
        run(*parse_args(stream_flags(tiny_encoder_dir, run_file, tmp_path / "out")))
    finally:
        monkeypatch.undo()
    assert len(seen) >= 10 and len(set(seen)) == 1  # every batch's teacher had the same (starting) weights


def test_max_eval_samples_bounds_every_evaluated_source(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    stsb = tmp_path / "sts-dev.csv"
    stsb.write_text(
        "".join(
            f"g\tf\t2015\t{i}\t{i % 5}.0\tthe film was good .\tthe {w} was bad .\n"
            for i, w in enumerate(["movie", "food", "place", "story", "phone", "plot"] * 3)
        )
    )
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        tmp_path / "out",
        "--max_steps",
        "1",
        "--max_eval_samples",
        "5",
        "--sts_eval_file",
        str(stsb),
    )
    assert main(flags) == 0
    import json

    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert metrics["eval_classification_rows"] == metrics["eval_sentiment_rows"] == 5
    assert metrics["eval_stsb_rows"] == 5
    table = capsys.readouterr().out
    assert re.search(r"^classification\s+rows\s+5$", table, re.M) and re.search(r"^stsb\s+rows\s+5$", table, re.M)
    full = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "full", "--max_steps", "1")
    assert main(full) == 0
    assert json.loads((tmp_path / "full" / "eval_results.json").read_text())["eval_classification_rows"] > 5
    with pytest.raises(ValueError, match="--max_eval_samples 0 must be at least 1"):
        DataArguments(max_eval_samples=0)


def test_a_contrastive_task_trains_beside_a_head_and_is_measured(tiny_encoder_dir, retrieval_files, tmp_path, capsys):
    run_file = retrieval_run_file(
        tmp_path,
        retrieval_files,
        negative_columns=["negative"],
        min_score=0.3,
        distractors={"file": str(retrieval_files["distractors"])},
        batch_size=12,
        batches_per_epoch=2,
    )
    out = tmp_path / "run"
    result = run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, out)]))
    dev = retrieval_files["dev_rows"]
    queries = {r["anchor"] for r in dev if r["score"] >= 0.3}
    documents = {r["positive"] for r in dev} | {r["negative"] for r in dev}  # rows below min_score stay documents
    assert result["eval_retrieval_queries"] == len(queries)
    assert result["eval_retrieval_documents"] == len(documents)
    distractors = {f"this {t} is {w} ." for t in TOPICS for w in POSITIVE_WORDS}  # the dev anchor is left out
    assert result["eval_retrieval_distractors_documents"] == len(documents | distractors)
    for name in ("recall@1", "recall@10", "mrr@10", "ndcg@10", "distractors_recall@1"):
        assert 0.0 <= result[f"eval_retrieval_{name}"] <= 1.0
    assert "eval_classification_accuracy" in result.metrics
    # 2 fixed contrastive batches per epoch beside the classification batches, for 2 epochs.
    assert result.train_metrics["global_step"] == 2 * (2 + math.ceil(39 / 8))
    printed = capsys.readouterr().out
    table = printed[printed.index("Results on the held-out rows") :]
    assert re.search(rf"retrieval\s+queries\s+{len(queries)}\n", table)  # a count, not 17.0000
    assert re.search(r"retrieval\s+distractors_recall@1\s+\d\.\d{4}\n", table)
    card = (out / "README.md").read_text()
    assert "retrieval pairs with in-batch negatives; in_batch, scale 20" in card and "truncate_dim=8" in card
    saved = json.loads((out / "config.json").read_text())
    assert saved["matryoshka_dims"] == [16, 8]


def test_a_second_run_reads_its_teacher_vectors_and_tokens(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    calls = []
    original = embed_module.encode
    monkeypatch.setattr(embed_module, "encode", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--max_steps", "2")
    assert main(flags) == 0
    assert sum(calls) == 64  # every row of the file, once (before the split)
    calls.clear()
    assert (
        main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two", "--max_steps", "2", "--seed", "7")) == 0
    )
    assert calls == []  # another seed splits differently, and still reads the same vectors


def test_a_streamed_run_pads_its_batches_to_a_multiple_of_8(tiny_encoder_dir, tmp_path, stream_files, monkeypatch):
    """Fewer batch shapes for a stream's unsorted lengths (STREAM_PAD_MULTIPLE); a table's batches are padded to
    their longest row, as before; --pad_to_multiple_of sets the multiple for either (1: the longest row)."""
    from sentmtl.data.batching import STREAM_PAD_MULTIPLE

    lengths = []
    original = MultiTaskCollator.__call__

    def recording(self, rows):
        batch = original(self, rows)
        lengths.append((batch["input_ids"].shape[1], max(sum(row["attention_mask"]) for row in rows)))
        return batch

    monkeypatch.setattr(MultiTaskCollator, "__call__", recording)
    train, dev = stream_files
    with open(train) as handle:  # rows one or two tokens longer: most batches pad past their longest row
        header, *rows = list(csv.reader(handle))
    longer = [(f"{text} the" + " the" * (i % 2), label) for i, (text, label) in enumerate(rows)]
    assert (
        main(
            stream_flags(
                tiny_encoder_dir,
                stream_run_file(tmp_path, write_csv(tmp_path / "s.csv", ("sentence", "label"), longer), dev),
                tmp_path / "s",
            )
        )
        == 0
    )
    assert STREAM_PAD_MULTIPLE == 8 and lengths
    assert all(padded % 8 == 0 and longest <= padded < longest + 8 for padded, longest in lengths), lengths
    assert any(padded > longest for padded, longest in lengths)  # padding was added
    lengths.clear()
    table = write_csv(tmp_path / "t.csv", ("text", "sentiment"), longer)
    assert main(tiny_run_flags(tiny_encoder_dir, table, tmp_path / "t", "--max_steps", "4")) == 0
    assert lengths and all(padded == longest for padded, longest in lengths)
    # run_config.yaml keeps the multiple each run used, so a later default cannot change its replay
    for out, multiple in (("s", 8), ("t", 1)):
        assert yaml.safe_load((tmp_path / out / "run_config.yaml").read_text())["pad_to_multiple_of"] == multiple
    lengths.clear()
    flags = tiny_run_flags(tiny_encoder_dir, table, tmp_path / "t16", "--max_steps", "4", "--pad_to_multiple_of", "16")
    assert main(flags) == 0
    assert lengths and all(padded % 16 == 0 and longest <= padded < longest + 16 for padded, longest in lengths)
    assert any(padded > longest for padded, longest in lengths)
    lengths.clear()
    stream = stream_run_file(tmp_path, tmp_path / "s.csv", dev)
    assert main(stream_flags(tiny_encoder_dir, stream, tmp_path / "s1", "--pad_to_multiple_of", "1")) == 0
    assert lengths and all(padded == longest for padded, longest in lengths)
    with pytest.raises(ValueError, match="--pad_to_multiple_of 0 must be at least 1"):
        DataArguments(pad_to_multiple_of=0)


# -- serving/: continuing, exporting and pushing what a run trained --------------------------------------------------


def test_continue_from_a_checkpoint_keeps_the_trained_heads(
    trained_dir, tiny_encoder_dir, synthetic_csv, tmp_path, capsys
):
    # Evaluation-only on the same data: identical metrics prove the heads (not fresh ones) were loaded.
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "eval", "--freeze", "all")
    flags[flags.index("--model_name_or_path") + 1] = str(trained_dir)
    flags = [f for f in flags if f not in ("--embedding_size", "16")]
    assert main(flags) == 0
    before = json.loads((trained_dir / "eval_results.json").read_text())
    again = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    # (Not eval_loss: its distillation term measures against the encoder as each run starts.)
    for key in (
        "eval_classification_accuracy",
        "eval_classification_loss",
        "eval_sentiment_loss",
        "eval_sentiment_mse",
    ):
        assert again[key] == pytest.approx(before[key], abs=1e-6)
    # And training continues from there (e.g. on another domain).
    flags = [f if f != "all" else "none" for f in flags] + ["--classification_loss_weight", "2"]
    flags[flags.index("--output_dir") + 1] = str(tmp_path / "continued")
    assert main(flags) == 0
    continued = json.loads((tmp_path / "continued" / "train_results.json").read_text())
    assert continued["global_step"] > 0
    # An architecture flag the checkpoint does not share would be ignored: refused, naming flag and checkpoint value.
    bad = [*flags[:-2], "--projection_init", "identity"]
    bad[bad.index("--output_dir") + 1] = str(tmp_path / "refused")
    assert main(bad) != 0
    assert re.search(r"--projection_init identity cannot apply to .*projection_init='random'", capsys.readouterr().err)
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    # The checkpoint fixes the heads; the run's losses and weights apply (they were silently the checkpoint's).
    tasks = json.loads((tmp_path / "continued" / "config.json").read_text())["tasks"]
    assert [(t["name"], t["loss_weight"]) for t in tasks] == [
        ("classification", 2.0),
        ("sentiment", 1.0),
        ("distillation", 10.0),
    ]


def test_export_without_normalisation_keeps_the_norms(tiny_encoder_dir, synthetic_csv, tmp_path):
    """The export test only ever saw normalize=True, so a Normalize module added regardless would have passed."""
    from sentence_transformers import SentenceTransformer

    import run_embed

    out = tmp_path / "raw"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--normalize", "false")) == 0
    assert (
        run_embed.main(["--model_name_or_path", str(out), "--export_sentence_transformer", str(tmp_path / "st")]) == 0
    )
    sentences = ["the movie was great .", "the food was awful !"]
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences)
    ours = sentmtl.encode(str(out), sentences, precision="fp32", device="cpu")
    np.testing.assert_allclose(exported, ours, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)


SECRET = "hf_sentmtlTestTokenThatMustNeverBeWritten"
ENV_SECRET = "hf_sentmtlEnvTokenThatMustNeverBeWritten"


def test_push_offline_fails_after_the_local_save_and_writes_no_token(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    out = tmp_path / "pushed"
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "someone/sentmtl-test",
        "--hub_token",
        SECRET,
        "--save_strategy",
        "epoch",
    )
    assert main(flags) == 1
    captured = capsys.readouterr()
    assert "Pushing to someone/sentmtl-test failed: HF_HUB_OFFLINE is set" in captured.err
    assert f"python -m sentmtl.serving.hub {out} --hub_model_id someone/sentmtl-test" in captured.err
    # Nothing trained was lost: the folder is complete and loads.
    model, _ = sentmtl.load_model_and_tokenizer(str(out))
    assert model.config.embedding_size == 16
    # The token is in no file (checkpoints and the Trainer's pickled arguments included) and in no output.
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in written)
    for path in written:
        data = path.read_bytes()
        assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, path
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text and ENV_SECRET not in text


def test_run_mtl_exports_onnx_and_the_push_uploads_it(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """onnx/ reaches the repository: the file list handed to the Hub client, filtered the way the client filters it."""
    skip_without_onnx()
    from huggingface_hub.utils import filter_repo_objects

    from sentmtl.training.run import main

    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--export_onnx", "true")) == 0
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")  # found in out/onnx
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    got = runtime.predict(ONNX_SENTENCES)
    want = torch_outputs(model, tokenizer, ONNX_SENTENCES)
    assert cosine(got["embeddings"], want["embeddings"]).min() >= 0.9999
    np.testing.assert_allclose(got["classification"], want["classification"], atol=1e-4)

    calls = {}

    class FakeApi:  # the network boundary
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message, revision=None):
            every = sorted(p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file())
            calls["uploaded"] = sorted(filter_repo_objects(every, allow_patterns=allow_patterns))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr("sentmtl.serving.hub.check_hub_reachable", lambda: None)
    push_folder(out, "someone/model")
    uploaded = calls["uploaded"]
    assert uploaded == files_to_upload(out)
    assert {*(f"onnx/{name}" for name in FILES.values()), f"onnx/{MANIFEST}", "onnx/tokenizer.json"} <= set(uploaded)
    assert "model.safetensors" in uploaded and "training_args.bin" not in uploaded
    # Trained again into the same folder without --export_onnx: the old graph must not be served or pushed.
    assert (
        main(
            tiny_run_flags(
                tiny_encoder_dir, synthetic_csv, out, "--overwrite_output_dir", "true", "--num_train_epochs", "1"
            )
        )
        == 0
    )
    assert not (out / "onnx").exists()
    assert not any(name.startswith("onnx/") for name in files_to_upload(out))


# -- a trained folder (conftest's `trained_dir`): what it holds, loads, serves, exports and pushes -------------------


def test_save_writes_auto_map_and_code_files(trained_dir):
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_sentmtl.SentMtlConfig",
        "AutoModel": "modeling_sentmtl.SentMtlModel",
        "AutoModelForSequenceClassification": "modeling_sentmtl.SentMtlForSequenceClassification",
    }
    for name in (
        "modeling_sentmtl.py",
        "configuration_sentmtl.py",
        "encoders.py",
        "task_spec.py",
        "task_types.py",
        "losses.py",
        "modeling_parts.py",
        "modeling_outputs.py",
        "loss_weighting.py",
        "model_folder.py",
        "distributed.py",
    ):
        assert (trained_dir / name).is_file(), name


def test_package_load_needs_no_trust_remote_code(trained_dir):
    model = AutoModel.from_pretrained(trained_dir)  # no trust_remote_code: `import sentmtl` registered the class
    assert type(model) is sentmtl.SentMtlModel


def test_n_task_round_trip_with_the_package(trained_dir):
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(trained_dir))
    assert [t.name for t in model.tasks] == ["classification", "sentiment", "distillation"]
    rebuilt = sentmtl.SentMtlModel(model.config)
    rebuilt.load_state_dict(model.state_dict())
    batch = padded_batch(tokenizer, ["the movie was great ."])
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(
        model(**batch).task_logits["classification"], rebuilt(**batch).task_logits["classification"]
    )


def test_text_classification_pipeline_serves_the_first_classification_task(trained_dir):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(trained_dir), device="cpu")
    result = classify(["the movie was great .", "the food was awful !"])
    assert {r["label"] for r in result} <= {"negative", "positive"}
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(trained_dir))
    model.eval()
    with torch.no_grad():
        probabilities = model(**padded_batch(tokenizer, ["the movie was great ."])).logits.softmax(-1)[0]
    assert result[0]["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)


def test_sentence_transformers_export_round_trip(trained_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    export_dir = tmp_path / "st"
    assert (
        run_embed.main(["--model_name_or_path", str(trained_dir), "--export_sentence_transformer", str(export_dir)])
        == 0
    )
    st_embeddings = SentenceTransformer(str(export_dir), device="cpu").encode(SHARING_SENTENCES)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(trained_dir))
    ours = sentmtl.encode(
        model, SHARING_SENTENCES, tokenizer, precision="fp32"
    )  # the exact path (bf16 is an approximation)
    cosine = (st_embeddings * ours).sum(1) / np.linalg.norm(st_embeddings, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(st_embeddings, axis=1), 1.0, atol=1e-5)  # the Normalize module


def test_export_of_an_n_task_model(trained_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    assert (
        run_embed.main(
            ["--model_name_or_path", str(trained_dir), "--export_sentence_transformer", str(tmp_path / "st")]
        )
        == 0
    )
    sentences = ["the movie was great .", "the food was awful !"]
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences)
    ours = sentmtl.encode(str(trained_dir), sentences, precision="fp32", device="cpu")
    assert ((exported * ours).sum(1)).min() >= 0.9999


@pytest.mark.parametrize("revision", [None, "experiment-1"])
def test_push_uploads_the_complete_model_folder(trained_dir, monkeypatch, revision):
    """--hub_revision used to be ignored (everything went to main); it names the branch pushed to."""
    calls = {}

    class FakeApi:  # the network boundary: everything before it is real
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create_repo"] = (repo_id, private, exist_ok)
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, branch, exist_ok=False):
            calls["create_branch"] = (repo_id, branch, exist_ok)

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message, revision=None):
            calls["upload"] = (repo_id, folder_path, allow_patterns)
            calls["revision"] = revision

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr("sentmtl.serving.hub.check_hub_reachable", lambda: None)
    url = push_folder(trained_dir, "someone/model", token="tok", revision=revision)
    assert url == "https://huggingface.co/someone/model"
    assert calls["revision"] == revision
    assert calls.get("create_branch") == (None if revision is None else ("someone/model", revision, True))
    assert calls["create_repo"] == ("someone/model", None, True) and calls["token"] == "tok"
    uploaded = calls["upload"][2]
    assert uploaded == files_to_upload(trained_dir)
    needed = {
        "config.json",
        "model.safetensors",
        "modeling_sentmtl.py",
        "configuration_sentmtl.py",
        "encoders.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "eval_results.json",
        "run_config.yaml",
    }
    assert needed <= set(uploaded)
    assert "training_args.bin" not in uploaded and not any(name.startswith("checkpoint-") for name in uploaded)


def test_model_card_reports_the_measured_metrics(trained_dir):
    card = (trained_dir / "README.md").read_text()
    metrics = json.loads((trained_dir / "eval_results.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers")
    assert "### Task `classification`" in card and "### Task `sentiment`" in card
    assert f"| accuracy | {metrics['eval_classification_accuracy']:.4f} |" in card
    assert f"| mse | {metrics['eval_sentiment_mse']:.4f} |" in card
    assert "trust_remote_code=True" in card and "--export_sentence_transformer" in card
    assert "train.csv" in card  # the user's data, not the UCI corpus
    assert "| `num_train_epochs` | 2.0 |" in card
