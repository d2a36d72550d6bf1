"""Regression tests for the correctness review: each test failed on the code before its fix and says what broke."""

import json
import os
import shutil
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT, synthetic_rows, tiny_run_flags
from transformers import BertConfig, BertModel, ElectraConfig, ElectraModel, TrainerControl, TrainerState

import sentmtl
from sentmtl.data.batching import MultiTaskCollator
from sentmtl.data.sampler import TaskBatchSampler
from sentmtl.data.split import near_duplicate_key, train_test_split
from sentmtl.training.callbacks import FreezeCallback
from sentmtl.training.run import main, parse_args
from sentmtl.training.trainer import SentMtlTrainer, all_processes_agree


def run_results(out, name="train_results.json") -> dict:
    return json.loads((out / name).read_text())


def exact_flags(tiny_encoder_dir, synthetic_csv, out, *extra):
    """Deterministic batches and no dropout, so two runs that see the same data compute the same gradients. Without
    distillation: its loss compares the sentences of a batch with each other, so 2 batches of 8 are not 1 of 16."""
    return tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--dropout",
        "0",
        "--bf16",
        "false",
        "--distillation_weight",
        "0",
        "--train_sampling_strategy",
        "sequential",
        "--warmup_steps",
        "0",
        *extra,
    )


def run_two_processes(flags: list[str]) -> None:
    """run_mtl.py under `accelerate launch` with 2 processes (torchrun over gloo on a machine without GPUs)."""
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
        *flags,
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]


# -- 1. loss scaling -------------------------------------------------------------------------------------------------


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


@pytest.mark.slow
def test_two_processes_log_the_loss_of_one(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Under DDP the loss was multiplied by the number of processes (`average_tokens_across_devices`)."""
    assert (
        main(exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--per_device_train_batch_size", "16")) == 0
    )
    run_two_processes(exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two"))  # 2 × 8 per device = 16 per step
    one, two = run_results(tmp_path / "one"), run_results(tmp_path / "two")
    assert two["global_step"] == one["global_step"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=2e-2)  # the encoder's own dropout differs


@pytest.fixture
def encoder_without_dropout(tiny_encoder_dir, tmp_path):
    """The tiny encoder with its own dropout off: random masks differ between 1 and 2 processes."""
    import shutil

    path = tmp_path / "no-dropout"
    shutil.copytree(tiny_encoder_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


# Matryoshka self-distillation compares the rows of a batch too (each prefix's cosine matrix against the full one's).
_SELF_DISTILLATION = ["--matryoshka_dims", "16", "8", "4", "--matryoshka_self_distillation", "10"]


@pytest.mark.parametrize("extra", [[], _SELF_DISTILLATION], ids=["distillation", "matryoshka_self_distillation"])
def test_two_processes_with_a_row_comparing_loss_train_and_evaluate_as_one(
    encoder_without_dropout, synthetic_csv, tmp_path, extra
):
    """#20: the relational distillation loss compares the rows of a batch; computed on each process's share it made
    2 processes × 8 rows differ from 1 × 16, and so did the per-row means of a last batch split 2 / 1. Every task's
    loss now sees the gathered global batch (and the evaluation's losses come from gathered outputs): the two runs
    reach the same training loss and the same evaluation."""
    tiny_encoder_dir = encoder_without_dropout
    flags = ["--distillation_weight", "10", "--eval_strategy", "epoch", *extra]
    one_flags = exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--per_device_train_batch_size", "16")
    assert main([*one_flags, *flags]) == 0
    run_two_processes([*exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two"), *flags])
    one, two = run_results(tmp_path / "one"), run_results(tmp_path / "two")
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    one, two = (run_results(tmp_path / name, "eval_results.json") for name in ("one", "two"))
    for key in (
        "eval_loss",
        "eval_distillation_loss",
        "eval_classification_loss",
        "eval_sentiment_loss",
        "eval_classification_accuracy",
    ):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key


# -- 2. Hub ids ------------------------------------------------------------------------------------------------------


def test_a_sentmtl_model_from_the_hub_cache_loads_as_sentmtl(tiny_encoder_dir, synthetic_csv, tmp_path):
    """`is_sentmtl_checkpoint` only looked for a local config.json, so `user/repo` was wrapped as a plain encoder and
    crashed. A Hub snapshot in HF_HOME, read offline, is what `from_pretrained("user/repo")` resolves to."""
    trained = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, trained)) == 0
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--someone--tiny-sentmtl"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(trained, snapshot, ignore=shutil.ignore_patterns("checkpoint-*"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "run_embed.py"),
            "--model_name_or_path",
            "someone/tiny-sentmtl",
            "--device",
            "cpu",
            "the movie was great .",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "size=16" in result.stdout  # the trained 16-d projection, not a fresh one
    assert "plain encoder" not in result.stderr


# -- 3. gradual unfreezing -------------------------------------------------------------------------------------------


def _epoch_begin(callback, model, epoch):
    callback.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl(), model=model)


def test_unfreezing_fires_after_a_resume_past_its_epoch_and_not_early(tiny_model):
    """`round(state.epoch) == N` never fired when a run resumed past epoch N (2.5 → the backbone stayed frozen), and
    fired in epoch 0 from fractional epochs that round up (0.6 → 1)."""
    callback = FreezeCallback("backbone", unfreeze_backbone_at_epoch=1)
    callback.apply(tiny_model)
    _epoch_begin(callback, tiny_model, 0.6)  # resumed inside epoch 0
    assert not any(p.requires_grad for p in tiny_model.encoder.parameters())
    _epoch_begin(callback, tiny_model, 2.5)  # resumed inside epoch 2, past the unfreezing
    assert all(p.requires_grad for p in tiny_model.encoder.parameters())


def test_unfreezing_is_refused_under_several_processes(tmp_path, monkeypatch):
    """Under DDP the parameters frozen at wrap time were never all-reduced once unfrozen: replicas drifted apart."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--unfreeze_backbone_at_epoch is single-process only"):
        parse_args(["--freeze_backbone", "--unfreeze_backbone_at_epoch", "1", "--output_dir", str(tmp_path)])


def _agree_worker(rank, port, results):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = all_processes_agree(torch.tensor(rank == 1))  # only rank 1 says yes
    finally:
        torch.distributed.destroy_process_group()


def test_stop_decisions_are_taken_by_all_processes_together():
    """The non-finite-loss stop and the interrupt were per process: the rank that stopped left the others waiting
    in the next all-reduce forever. Now every rank takes the same decision."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_agree_worker, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: False, 1: False}


# -- 4. label smoothing ----------------------------------------------------------------------------------------------


def test_label_smoothing_keeps_task_b(tiny_model, tiny_tokenizer, tmp_path):
    """The Trainer's label smoother replaced the model's loss with a smoothed Task A loss: Task B stopped training.
    Now each classification task smooths its own cross-entropy, inside the model's summed loss."""
    from test_training import tokenized_synthetic, training_args

    tiny_model.config.dropout = 0.0
    tiny_model.config.tasks = [
        {**t.to_dict(), "label_smoothing": 0.1 if t.type == "classification" else 0.0} for t in tiny_model.tasks
    ]
    args = training_args(tmp_path, label_smoothing_factor=0.1, max_steps=4, learning_rate=1e-3)
    dataset = tokenized_synthetic(tiny_tokenizer)
    before = tiny_model.sentiment_head.weight.detach().clone()
    trainer = SentMtlTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    assert trainer.label_smoother is None
    batch = MultiTaskCollator(tiny_tokenizer, tiny_model.tasks)([dataset[i] for i in range(8)])
    batch.pop("domain")
    labels, scores = batch["task_labels"]["classification"], batch["task_labels"]["sentiment"]
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model(**batch)
        expected = torch.nn.functional.cross_entropy(
            out.logits, labels, label_smoothing=0.1
        ) + torch.nn.functional.binary_cross_entropy_with_logits(out.sentiment_logits, scores.float())
        assert trainer.compute_loss(tiny_model, dict(batch)).item() == pytest.approx(expected.item(), rel=1e-5)
    tiny_model.train()
    trainer.train()
    assert not torch.equal(tiny_model.sentiment_head.weight, before)


# -- 5. class names --------------------------------------------------------------------------------------------------


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


# -- 6. device and precision -----------------------------------------------------------------------------------------


def test_auto_precision_follows_the_device_not_the_machine(monkeypatch):
    """`is_bf16_supported()` counts emulation, so GPUs that only emulate bf16 got it as "fast"; and embedding on the
    CPU of a GPU machine used the GPU's answer. On CUDA `auto` now means fp32 (bf16 autocast measured slower there
    for this encoder, emulated or native), on the CPU it follows the CPU's own instructions."""
    from sentmtl.serving import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    precision.fast_bf16_available.cache_clear()
    try:
        assert precision.fast_bf16_available("cuda") is False
        assert precision.fast_bf16_available() is False  # the default device is the GPU now
        monkeypatch.setattr(precision, "_read_cpuinfo", lambda: "flags\t\t: fpu avx2\n")  # no native bf16
        assert precision.fast_bf16_available("cpu") is False  # the CPU follows its own rule (tests/test_precision.py)
        assert precision.default_device().type == "cuda"
    finally:
        precision.fast_bf16_available.cache_clear()


def test_run_embed_puts_the_model_on_the_chosen_device(monkeypatch, tiny_encoder_dir, capsys):
    """run_embed never moved the model to the GPU, yet chose bf16 autocast because the GPU had it."""
    import run_embed

    moved = []
    original = torch.nn.Module.to
    monkeypatch.setattr(
        torch.nn.Module, "to", lambda self, *a, **k: (moved.append(str(a[0]) if a else k), original(self, *a, **k))[1]
    )
    assert (
        run_embed.main(["--model_name_or_path", str(tiny_encoder_dir), "--device", "cpu", "the plot was good ."]) == 0
    )
    assert "cpu" in moved
    monkeypatch.setattr("sentmtl.serving.embed_cli.default_device", lambda: torch.device("cpu"))
    moved.clear()
    assert run_embed.main(["--model_name_or_path", str(tiny_encoder_dir), "the plot was good ."]) == 0
    assert "cpu" in moved  # no --device: the default device, picked once


# -- 7. uncertainty weighting ----------------------------------------------------------------------------------------


def test_uncertainty_weights_move_when_one_task_dominates(tiny_encoder_dir, tiny_tokenizer, tmp_path):
    """The log-variances trained at the heads' LR (2e-4) and moved by ~0.02 in 100 steps: the weighting did
    nothing. With Task A's loss 100× Task B's, the optimizer the trainer builds must part them by more than 1."""
    from test_training import tokenized_synthetic, training_args

    def log_variances_after_100_steps(**lrs):
        model, _ = sentmtl.load_model_and_tokenizer(
            str(tiny_encoder_dir), embedding_size=16, loss_weighting="uncertainty"
        )
        trainer = SentMtlTrainer(
            model=model,
            args=training_args(tmp_path, **lrs),
            train_dataset=tokenized_synthetic(tiny_tokenizer),
            processing_class=tiny_tokenizer,
        )
        optimizer = trainer.create_optimizer()
        for _ in range(100):  # the task losses held fixed: only the weighting learns
            model.combine_losses({"classification": torch.tensor(5.0), "sentiment": torch.tensor(0.05)}).backward()
            optimizer.step()
            optimizer.zero_grad()
        return model.loss_log_variances.detach().tolist()

    assert training_args(tmp_path).loss_weighting_learning_rate == 1e-2  # the documented default
    s_a, s_b = log_variances_after_100_steps()
    # The optimum is s = log(2 L): +2.3 for Task A, -2.3 for Task B; Adam moves each by about LR per step.
    assert s_a > 0.5 and s_b < -0.5, (s_a, s_b)
    old_a, old_b = log_variances_after_100_steps(loss_weighting_learning_rate=2e-4)  # the heads' LR, as before
    assert abs(old_a) < 0.05 and abs(old_b) < 0.05


def test_uncertainty_weighting_formula_away_from_zero(tiny_encoder_dir, tiny_tokenizer):
    """The old test only checked s = 0, where exp(-s) = 1 and the formula cannot be told from a plain sum."""
    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, loss_weighting="uncertainty")
    with torch.no_grad():
        model.loss_log_variances.copy_(torch.tensor([0.7, -1.3]))
    la, lb = torch.tensor(0.4), torch.tensor(0.9)
    expected = np.exp(-0.7) * 0.4 + 0.35 + np.exp(1.3) * 0.9 - 0.65
    assert model.combine_losses({"classification": la, "sentiment": lb}).item() == pytest.approx(expected, rel=1e-5)
    assert model.combine_losses({"sentiment": lb}).item() == pytest.approx(np.exp(1.3) * 0.9 - 0.65, rel=1e-5)


# -- 8. pooler -------------------------------------------------------------------------------------------------------


def test_pooler_pooling_is_checked_against_the_loaded_encoder(tmp_path, tiny_tokenizer):
    """`--pooling pooler` passed validation for ELECTRA (no pooler) and then crashed in the first forward pass."""
    small = dict(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    ElectraModel(ElectraConfig(embedding_size=32, **small)).save_pretrained(tmp_path / "electra")
    with pytest.raises(ValueError, match="pooling='pooler' needs an encoder with a pooler layer"):
        sentmtl.SentMtlModel.from_encoder(str(tmp_path / "electra"), pooling="pooler")
    # The model checks the encoder object itself, not only the config's model type.
    encoder = BertModel(BertConfig(**small), add_pooling_layer=False)
    config = sentmtl.SentMtlConfig(encoder_config=encoder.config.to_dict(), pooling="pooler")
    with pytest.raises(ValueError, match="this BertModel has none"):
        sentmtl.SentMtlModel(config, encoder=encoder)


# -- 9. resume auto --------------------------------------------------------------------------------------------------


def test_resume_auto_without_a_checkpoint_keeps_the_overwrite_guard(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    """`--resume_from_checkpoint auto` skipped the guard even with nothing to resume: it trained over the model."""
    out = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out)) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--resume_from_checkpoint", "auto")) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


# -- 10. near-duplicates in the split --------------------------------------------------------------------------------


def test_split_keeps_near_duplicates_on_one_side():
    """The split grouped identical strings only: `Great phone.` and `Great Phone.` (one input to an uncased
    tokenizer) could land on both sides."""
    assert near_duplicate_key("Great phone!.") == near_duplicate_key("great  PHONE.") == "great phone"
    assert near_duplicate_key("Great phone") != near_duplicate_key("Great phones")
    variants = ["Great phone.", "Great Phone.", "Great phone!.", "great phone", "GREAT PHONE!!"]
    rows = synthetic_rows(40)
    sentences = rows["sentence"] + variants * 2
    labels = rows["label"] + [1] * len(variants) * 2
    dataset = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    for seed in range(10):
        split = train_test_split(dataset, 0.3, seed)
        sides = [{near_duplicate_key(s) for s in split[side]["sentence"]} for side in ("train", "test")]
        assert not sides[0] & sides[1]
        assert split["train"].num_rows + split["test"].num_rows == len(sentences)


def test_real_corpus_has_2972_near_duplicate_groups_and_none_straddle(data_dir):
    from sentmtl.data.corpus import load_sentiment_corpus

    corpus = load_sentiment_corpus(data_dir)
    assert len({near_duplicate_key(s) for s in corpus["sentence"]}) == 2972
    split = train_test_split(corpus, 0.2, 42)
    train, test = ({near_duplicate_key(s) for s in split[side]["sentence"]} for side in ("train", "test"))
    assert not train & test and len(train) + len(test) == 2972


# -- 11. flags that were silently ignored ----------------------------------------------------------------------------


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


def test_data_seed_zero_is_a_seed(tiny_model, tiny_tokenizer, tmp_path):
    """`data_seed or seed` treated --data_seed 0 as unset."""
    from test_training import tokenized_synthetic, training_args

    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, data_seed=0, seed=42, train_sampling_strategy="group_by_length"),
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
    )
    sampler = trainer.get_train_dataloader().batch_sampler
    while not isinstance(sampler, TaskBatchSampler):
        sampler = getattr(sampler, "batch_sampler", None) or sampler.sampler
    assert sampler.seed == 0


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


# -- 12. tests that could pass without testing ----------------------------------------------------------------------


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


# -- 13. evaluate ----------------------------------------------------------------------------------------------------


def test_no_unused_install_requirements():
    """`evaluate` was required and never imported (metrics are scikit-learn, offline)."""
    requirements = (REPO_ROOT / "setup.cfg").read_text().split("install_requires =")[1].split("\n\n")[0]
    assert "evaluate" not in requirements


# -- 14. user errors -------------------------------------------------------------------------------------------------


def test_expected_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    """Offline with no corpus, `make run` printed 15 lines of traceback before its message."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(REPO_ROOT / "run_mtl.py"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert lines == [lines[-1]] and "Offline mode is set" in lines[-1] and "--data_dir" in lines[-1]
    debug = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env, "SENTMTL_DEBUG": "1"}, cwd=tmp_path
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConnectionError" in debug.stderr
