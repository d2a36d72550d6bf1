"""Interrupted and resumed runs (signals in process and to a running run_mtl.py): the resumed run ends where the
uninterrupted one does, for tables, the weight average and streams."""

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, stream_flags, stream_run_file, synthetic_rows, tiny_run_flags, write_csv
from transformers import TrainerCallback

from sentmtl.training.checkpoints import latest_checkpoint
from sentmtl.training.run import main


class SignalAtStep(TrainerCallback):
    """Sends a real signal to this process at the end of one training step (the InterruptCallback handles it)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def run_in_process(flags, callbacks=()):
    from sentmtl.training.run import parse_args, run

    return run(*parse_args(flags), callbacks=callbacks)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_epoch_then_resume_gives_the_uninterrupted_metrics(
    tiny_encoder_dir, synthetic_csv, tmp_path, signum, known_handlers
):
    from sentmtl.training.stopping import RunInterrupted

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


def test_ema_resumed_run_ends_on_the_uninterrupted_average(tiny_encoder_dir, synthetic_csv, tmp_path):
    """The average is saved with each checkpoint and continued from it: interrupted + resumed = uninterrupted."""
    import signal

    from sentmtl.training.checkpoints import latest_checkpoint
    from sentmtl.training.stopping import RunInterrupted

    ema = ("--ema_decay", "0.8")
    reference = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "reference", *ema))
    plain = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "plain"))
    assert reference["eval_loss"] != pytest.approx(plain["eval_loss"], abs=1e-6)  # the average is what was evaluated
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        run_in_process(
            tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *ema), callbacks=[SignalAtStep(10, signal.SIGINT)]
        )
    assert (latest_checkpoint(out) / "ema_weights.pt").is_file()
    resumed = run_in_process(
        tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *ema, "--resume_from_checkpoint", "auto")
    )
    for key in ("eval_loss", "eval_classification_accuracy", "eval_sentiment_mse"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    # A checkpoint saved without the average cannot continue one.
    other = tmp_path / "no_ema"
    with pytest.raises(RunInterrupted):
        run_in_process(
            tiny_run_flags(tiny_encoder_dir, synthetic_csv, other), callbacks=[SignalAtStep(10, signal.SIGINT)]
        )
    with pytest.raises(ValueError, match="has no ema_weights.pt"):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, other, *ema, "--resume_from_checkpoint", "auto"))


def test_an_interrupted_streamed_run_resumes_at_the_right_row(tiny_encoder_dir, tmp_path, stream_files):
    import signal

    from sentmtl.training.stopping import RunInterrupted

    run_file = stream_run_file(tmp_path, *stream_files)
    reference = run_in_process(stream_flags(tiny_encoder_dir, run_file, tmp_path / "reference"))
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted, match="stopped at step 5 of 10"):
        run_in_process(stream_flags(tiny_encoder_dir, run_file, out), callbacks=[SignalAtStep(4, signal.SIGINT)])
    resumed = run_in_process(stream_flags(tiny_encoder_dir, run_file, out, "--resume_from_checkpoint", "auto"))
    for key in ("eval_loss", "eval_sentiment_accuracy", "eval_sentiment_log_loss", "eval_distillation_loss"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    other = run_in_process(stream_flags(tiny_encoder_dir, run_file, tmp_path / "other", "--seed", "3"))
    assert other["eval_sentiment_log_loss"] != pytest.approx(reference["eval_sentiment_log_loss"], abs=1e-6)


@pytest.mark.parametrize("stop", [6, 11])
def test_a_streamed_run_resumed_after_its_first_pass_is_exact(
    tiny_encoder_dir, tmp_path, stream_files, monkeypatch, stop
):
    """36 rows, 8 a batch: 5 batches a pass (the last of 4 rows), so 12 steps are 2 passes and 2 batches of a third.
    Stopped after the first batch of the second pass (6) or in the third (11), the resumed run trains the batches the
    uninterrupted one did, in its order — not the later pass from its start — and ends on the same model."""
    import hashlib
    import signal

    from sentmtl.training.stopping import RunInterrupted
    from sentmtl.training.trainer import SentMtlTrainer

    trained = []
    training_step = SentMtlTrainer.training_step

    def recording(self, model, inputs, *args, **kwargs):
        trained.append(hashlib.sha1(inputs["input_ids"].numpy().tobytes()).hexdigest()[:8])  # the batch, by its rows
        return training_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SentMtlTrainer, "training_step", recording)
    rows = synthetic_rows(36)
    labelled = [(s, ["negative", "positive"][label]) for s, label in zip(rows["sentence"], rows["label"])]
    train = write_csv(tmp_path / "short.csv", ("sentence", "label"), labelled)
    run_file = stream_run_file(tmp_path, train, stream_files[1])

    def flags(out, *extra):
        return stream_flags(tiny_encoder_dir, run_file, tmp_path / out, "--max_steps", "12", *extra)

    reference = run_in_process(flags("reference"))
    uninterrupted, trained[:] = list(trained), []
    assert len(uninterrupted) == 12 and uninterrupted[5:10] != uninterrupted[:5]  # each pass reshuffled
    with pytest.raises(RunInterrupted, match=f"stopped at step {stop} of 12"):
        run_in_process(flags("interrupted"), callbacks=[SignalAtStep(stop - 1, signal.SIGINT)])
    resumed = run_in_process(flags("interrupted", "--resume_from_checkpoint", "auto"))
    assert trained == uninterrupted
    for key in ("eval_loss", "eval_sentiment_accuracy", "eval_sentiment_log_loss", "eval_distillation_loss"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
