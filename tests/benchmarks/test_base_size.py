"""benchmarks/base_size.py: each scenario's run file (mpnet's width, the STS-B folder given, mined negatives on the
contrastive task), a finished run skipped, and the table over what is finished."""

import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import base_size  # noqa: E402


def _args(tmp_path, *extra):
    folders = ["--runs_dir", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out")]
    return base_size.parse_args(["--data_dir", "corpus", "--stsb_dir", str(tmp_path / "stsb"), *folders, *extra])


def _tune_result(tmp_path, name, accuracy, stsb=0.8):
    folder = tmp_path / "runs" / "tune" / name / "seed0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(
        json.dumps({"eval_classification_accuracy": accuracy, "eval_stsb_spearman": stsb})
    )


class _Stop(Exception):
    """Raised by `_stop_at_training`'s fake `train`: the sweep got as far as training a run."""


def _stop_at_training(tmp_path, monkeypatch, *extra) -> tuple[list, list[str]]:
    """A sweep whose `train` records the run's command and stops it: (the commands, `main`'s flags + `extra`)."""
    commands = []

    def fake_train(command, log, peaks):
        commands.append(command)
        raise _Stop

    monkeypatch.setattr(base_size, "train", fake_train)
    return commands, _sweep_flags(tmp_path, monkeypatch, *extra)


def _sweep_flags(tmp_path, monkeypatch, *extra) -> list[str]:
    """`main`'s flags for a sweep in tmp_path (SIGTERM's handler not set on the test process)."""
    monkeypatch.setattr(base_size.signal, "signal", lambda *a: None)
    flags = ["--data_dir", "c", "--stsb_dir", "s", "--runs_dir", str(tmp_path / "runs")]
    return [*flags, "--output_dir", str(tmp_path / "out"), "--encoder", "enc", *extra]


def _stop_when_ready(monkeypatch, log):
    """The sweep's polling loop, stopped (as by SIGTERM) once the run has printed 'ready' to `log`."""

    class Clock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds):
            time.sleep(seconds)
            if "ready" in log.read_text():
                raise SystemExit(143)

    monkeypatch.setattr(base_size, "time", Clock)


def test_each_scenario_runs_its_config_at_mpnets_width(tmp_path):
    args = _args(tmp_path)
    full = yaml.safe_load(base_size.run_file("full/multitask_sts", args, tmp_path / "a").read_text())
    config = yaml.safe_load((REPO_ROOT / "configs/multitask_sts.yaml").read_text())
    assert full["embedding_size"] == 768 and full["projection_init"] == "identity"
    assert [t["name"] for t in full["tasks"]] == [t["name"] for t in config["tasks"]]
    assert full["tasks"][3]["data"] == {"stsb": str((tmp_path / "stsb").resolve())}
    assert full["sts_eval_file"].endswith("stsb/sts-dev.csv")
    mined = yaml.safe_load(base_size.run_file("full/retrieval_sts_mined", args, tmp_path / "b").read_text())
    retrieval = next(t for t in mined["tasks"] if t["type"] == "contrastive")
    assert retrieval["hard_negatives"]["num_negatives"] >= 1 and mined["matryoshka_dims"][0] == 768
    plain = yaml.safe_load(base_size.run_file("full/retrieval_sts", args, tmp_path / "c").read_text())
    assert "hard_negatives" not in next(t for t in plain["tasks"] if t["type"] == "contrastive")


def test_lora_is_chosen_on_seed_0_by_task_a_and_sts_b(tmp_path):
    args = _args(tmp_path)
    with pytest.raises(ValueError, match="LoRA is not chosen yet"):
        base_size.lora_flags(args)
    for name, (accuracy, stsb) in zip(base_size.LORA_GRID, [(0.95, 0.880), (0.96, 0.885), (0.96, 0.884)]):
        _tune_result(tmp_path, name, accuracy, stsb)
    assert base_size.lora_flags(args) == list(base_size.LORA_GRID["lora_r16_lr5e-4"])


def test_the_rank_probe_reports_on_seed_0_and_never_changes_the_choice(tmp_path):
    args = _args(tmp_path)
    (probe,) = base_size.LORA_RANK_PROBE
    assert base_size.seeds_of(f"tune/{probe}", args) == [base_size.TUNE_SEED]
    _tune_result(tmp_path, probe, 0.99, 0.95)  # the best score of all
    with pytest.raises(ValueError, match="LoRA is not chosen yet"):  # it stands in for no grid point
        base_size.lora_flags(args)
    for name, accuracy in zip(base_size.LORA_GRID, (0.95, 0.96, 0.94)):
        _tune_result(tmp_path, name, accuracy)
    assert base_size.lora_flags(args) == list(base_size.LORA_GRID["lora_r16_lr5e-4"])


@pytest.mark.parametrize("suffix", ["", "_ckpt"])
def test_the_padded_pairs_pad_to_16_and_lora_takes_its_chosen_flags(tmp_path, monkeypatch, suffix):
    for name, accuracy in zip(base_size.LORA_GRID, (0.95, 0.96, 0.94)):
        _tune_result(tmp_path, name, accuracy)
    commands, flags = _stop_at_training(tmp_path, monkeypatch)
    for scenario in (f"full/multitask_sts_pad16{suffix}", f"lora/multitask_sts_pad16{suffix}"):
        with pytest.raises(_Stop):
            base_size.main([*flags, "--only", scenario])
        # the checkpointed pair carries the memory target: every seed; the other pair one
        assert base_size.seeds_of(scenario, _args(tmp_path)) == ([42, 43, 44] if suffix else [42])
    full, lora = commands
    for command in (full, lora):
        assert command[command.index("--pad_to_multiple_of") + 1] == "16"
        # the checkpointed pair checkpoints both sides; the other neither
        assert ("--activation_checkpointing" in command) == bool(suffix)
    assert "--lora_r" not in full
    chosen = list(base_size.LORA_GRID["lora_r16_lr5e-4"])
    start = lora.index("--lora_r")
    assert lora[start : start + len(chosen)] == chosen


def test_finished_runs_are_skipped_and_tabled(tmp_path, monkeypatch, capsys):
    def fake(*_):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(base_size, "train", fake)
    values = {"eval_classification_accuracy": 0.95, "eval_stsb_spearman": 0.88, "peak_anon_gb": 3.0, "step_s": 1.5}
    for seed, accuracy in ((42, 0.95), (43, 0.97)):
        folder = tmp_path / "runs" / "full" / "multitask_sts" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({**values, "eval_classification_accuracy": accuracy}))
    out = tmp_path / "out"
    flags = ["--data_dir", "c", "--stsb_dir", "s", "--runs_dir", str(tmp_path / "runs"), "--output_dir", str(out)]
    assert base_size.main([*flags, "--table_only", "--seeds", "42", "43"]) == 0
    table = (out / "base_size.md").read_text()
    assert "| full/multitask_sts | 2 | 96.0 ± 1.4 |" in table
    assert "| 88.0 ± 0.0 |" in table  # STS-B × 100
    assert "lora/multitask_sts" not in table  # nothing finished there
    assert (out / "base_size.png").is_file()


def test_the_saved_size_counts_the_model_folder_not_its_checkpoints(tmp_path):
    folder = tmp_path / "runs" / "model"
    (folder / "checkpoint-10").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 2_000_000)
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"x" * 5_000_000)
    assert base_size.folder_mb(folder) == 2.0


def test_a_killed_run_resumes_from_its_checkpoint_and_keeps_every_processs_peak(tmp_path, monkeypatch):
    commands = []

    class Killed(Exception):
        pass

    def fake_train(command, log, peaks):
        commands.append(command)
        raise Killed  # the sweep killed mid-run

    train = base_size.train
    monkeypatch.setattr(base_size, "train", fake_train)
    args = _args(tmp_path)
    with pytest.raises(Killed):
        base_size.run_one("full/multitask_sts", 42, args, "encoder")
    command = commands[0]
    assert command[command.index("--resume_from_checkpoint") + 1] == "auto"
    assert command[command.index("--save_strategy") + 1] == "steps"
    assert command[command.index("--save_steps") + 1] == str(base_size.SAVE_STEPS)

    # train() itself: a second process appends its peaks to the first one's, and the run's peak is the higher.
    peaks, log = tmp_path / "peaks.json", tmp_path / "train.log"
    grow = "import time; b = b'x' * {}; print('step'); time.sleep(1)"
    first = train([sys.executable, "-c", grow.format(300_000_000)], log, peaks)
    second = train([sys.executable, "-c", grow.format(1)], log, peaks)
    recorded = json.loads(peaks.read_text())
    assert len(recorded) == 2 and recorded[0]["preparation"] > recorded[1]["preparation"] + 0.2  # the first: +300 MB
    assert first["peak_anon_gb"] == second["peak_anon_gb"] == recorded[0]["preparation"]
    assert first["peak_anon_training_gb"] is None and (first["processes"], second["processes"]) == (1, 2)
    assert log.read_text().count("step") == 2  # the log is appended to, not replaced


def test_the_training_phase_has_its_own_peak(tmp_path, monkeypatch):
    """The phases are told apart by their first lines in the log (`PHASES`): memory held before the optimizer's table
    or after the train_runtime line is not training's, even where the run prints that line without flushing (as
    transformers does) and the sweep's own stdout is buffered. An earlier process's lines, further up the appended
    log, start no phase of this one; an earlier process recorded as one number (an older version of the script)
    counts for the whole run only."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    peaks, log = tmp_path / "peaks.json", tmp_path / "train.log"
    log.write_text("Optimizer parameter groups:\n{'train_runtime': '9.0'}\n")  # the earlier process's lines
    peaks.write_text(json.dumps([5.0]))
    run = (
        "import sys, time\n"
        "def phase(line, size):\n"
        "    print(line)\n"
        "    held = bytearray(size)\n"
        "    held[::4096] = b'x' * len(held[::4096])\n"
        "    time.sleep(1.5)\n"
        "phase('loading', 400_000_000)\n"
        "phase('Optimizer parameter groups:', 150_000_000)\n"
        "phase(\"{'train_runtime': '1.0'}\", 600_000_000)\n"
    )
    result = base_size.train([sys.executable, "-c", run], log, peaks)
    old, new = json.loads(peaks.read_text())
    assert old == 5.0 and set(new) == {"preparation", "training", "after"}
    assert new["after"] > new["preparation"] > new["training"] + 0.15  # GB: 600 / 400 / 150 MB held
    assert 0.15 < new["training"] < 0.35  # the interpreter plus the 150 MB, none of the phase before
    assert result == {"processes": 2, "peak_anon_gb": 5.0, "peak_anon_training_gb": new["training"]}


def test_the_memory_probe_compares_full_with_lora_with_and_without_dropout(tmp_path, monkeypatch):
    import train_memory

    seen = {}
    monkeypatch.setattr(train_memory, "compare", lambda variants, *rest: seen.update(variants=variants, rest=rest))
    base_size.memory_probe(_args(tmp_path, "--memory_steps", "40"), "encoder")  # needs no tuning run
    variants = seen["variants"]
    assert variants["full"][0].endswith("run.yaml") and "--lora_r" not in variants["full"]
    for dropout in ("0.1", "0"):
        lora = variants[f"lora_dropout_{dropout}"]
        assert lora[: len(variants["full"])] == variants["full"] and "--lora_r" in lora
        assert lora.count("--lora_dropout") == 1 and lora[lora.index("--lora_dropout") + 1] == dropout
    assert seen["rest"][:3] == (40, 10, ["default", "mapped"])
    assert all(Path(path).is_absolute() for path in (variants["full"][0], seen["rest"][3]))
    with pytest.raises(SystemExit, match="at least 2"):
        base_size.memory_probe(_args(tmp_path, "--memory_steps", "1"), "encoder")


def test_the_memory_probe_takes_the_variants_heaps_and_folder_asked_for(tmp_path, monkeypatch):
    import train_memory

    seen = {}
    monkeypatch.setattr(train_memory, "compare", lambda variants, *rest: seen.update(variants=variants, rest=rest))
    flags = ["--memory_steps", "30", "--memory_variants", "full_pad16", "lora_dropout_0_pad16"]
    flags += ["--memory_heaps", "default", "--memory_name", "padding"]
    base_size.memory_probe(_args(tmp_path, *flags), "encoder")
    variants = seen["variants"]
    assert list(variants) == ["full_pad16", "lora_dropout_0_pad16"]  # in the order given: the first is the baseline
    for arguments in variants.values():
        assert arguments[arguments.index("--pad_to_multiple_of") + 1] == "16"
    assert "--lora_r" not in variants["full_pad16"] and "--lora_r" in variants["lora_dropout_0_pad16"]
    steps, warmup, heaps, work_dir, output_dir = seen["rest"]
    assert (steps, warmup, heaps) == (30, 10, ["default"])
    assert Path(work_dir).name == "padding" and Path(output_dir).name == "padding"
    with pytest.raises(SystemExit, match="give --memory_name"):  # not over the default comparison's folder
        base_size.memory_probe(_args(tmp_path, "--memory_steps", "30", "--memory_heaps", "default"), "encoder")
    with pytest.raises(SystemExit):  # a name that is not a variant
        base_size.parse_args(["--data_dir", "d", "--stsb_dir", "s", "--memory_variants", "lora_pad8"])


def test_the_lora_choice_is_frozen_by_its_first_use(tmp_path):
    args = _args(tmp_path)
    for name, accuracy in zip(base_size.LORA_GRID, (0.95, 0.96, 0.94)):
        _tune_result(tmp_path, name, accuracy)
    first = base_size.lora_flags(args)
    assert first == list(base_size.LORA_GRID["lora_r16_lr5e-4"])
    # a grid point that scores higher later does not change what the lora/ runs already use
    _tune_result(tmp_path, "lora_r16_lr2e-4", 0.99)
    assert base_size.lora_flags(args) == first
    # the choice lives beside the committed summary, not in the run folders that stay on one machine
    assert json.loads((tmp_path / "out" / "lora_chosen.json").read_text())["setting"] == "lora_r16_lr5e-4"


def _recorded_summary(tmp_path):
    summary = {
        "full/multitask_sts": [
            {"seed": 42, "eval_classification_accuracy": 0.95, "eval_stsb_spearman": 0.90, "step_s": 1.2},
            {"seed": 43, "eval_classification_accuracy": 0.97, "eval_stsb_spearman": 0.91, "step_s": 1.3},
        ],
        **{
            f"tune/{name}": [{"seed": 0, "eval_classification_accuracy": a, "eval_stsb_spearman": 0.9}]
            for name, a in zip(base_size.LORA_GRID, (0.95, 0.97, 0.96))
        },
    }
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "summary.json").write_text(json.dumps(summary))
    return summary


def test_a_fresh_checkout_continues_from_the_committed_summary(tmp_path, monkeypatch):
    """The run folders stay on the machine that ran them: a clone holds only --output_dir. Runs recorded in its
    summary are not trained again, the LoRA choice reads the recorded tuning runs, and a call with fewer seeds keeps
    every recorded one."""
    _recorded_summary(tmp_path)
    trained, flags = _stop_at_training(tmp_path, monkeypatch)
    with pytest.raises(_Stop):
        base_size.main([*flags, "--only", "full/multitask_sts", "lora/multitask_sts"])
    # 42 and 43 were skipped; 44 is the first run trained
    assert len(trained) == 1 and trained[0][trained[0].index("--seed") + 1] == "44"
    assert base_size.lora_flags(_args(tmp_path)) == list(base_size.LORA_GRID["lora_r16_lr5e-4"])

    assert base_size.main([*flags, "--table_only", "--seeds", "42"]) == 0
    table = (tmp_path / "out" / "base_size.md").read_text()
    assert "| full/multitask_sts | 2 | 96.0 ± 1.4 |" in table and "seeds (42, 43;" in table
    kept = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["seed"] for r in kept["full/multitask_sts"]] == [42, 43]
    assert set(kept) == {"full/multitask_sts", *(f"tune/{name}" for name in base_size.LORA_GRID)}


def test_a_sweep_of_recorded_runs_trains_nothing_and_writes_its_outputs_once(tmp_path, monkeypatch):
    _recorded_summary(tmp_path)
    writes = []
    monkeypatch.setattr(base_size, "train", lambda *a: pytest.fail("a recorded run was trained again"))
    monkeypatch.setattr(base_size, "write_outputs", lambda args, encoder, verbose=False: writes.append(verbose))
    flags = _sweep_flags(tmp_path, monkeypatch, "--seeds", "42", "43")
    assert base_size.main([*flags, "--only", "full/multitask_sts"]) == 0
    assert writes == [True]  # the closing table only: no rewrite (and replot) per skipped run


def test_each_finished_run_reaches_the_summary_before_the_next_starts(tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    def fake_train(command, log, peaks):
        if command[command.index("--seed") + 1] == "43":
            raise Killed  # the session ends during the second run
        model_dir = Path(command[command.index("--output_dir") + 1])
        model_dir.mkdir(parents=True)
        (model_dir / "eval_results.json").write_text(
            json.dumps({"eval_classification_accuracy": 0.96, "eval_stsb_spearman": 0.9})
        )
        (model_dir / "train_results.json").write_text(
            json.dumps({"train_runtime": 300.0, "train_steps_per_second": 0.5})
        )
        return {"peak_anon_gb": 4.0, "peak_anon_training_gb": 3.0, "processes": 1}

    def fake_measure(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout='{"recall@1": 80.0}\n', stderr="")

    monkeypatch.setattr(base_size, "train", fake_train)
    monkeypatch.setattr(base_size, "subprocess", types.SimpleNamespace(run=fake_measure))
    flags = _sweep_flags(tmp_path, monkeypatch, "--only", "full/multitask_sts")
    with pytest.raises(Killed):
        base_size.main(flags)
    (only,) = json.loads((tmp_path / "out" / "summary.json").read_text())["full/multitask_sts"]
    assert only["seed"] == 42 and only["recall@1"] == 80.0 and only["peak_anon_training_gb"] == 3.0


def test_a_summary_result_without_its_seed_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text(json.dumps({"full/multitask_sts": [{"step_s": 1.0}]}))
    with pytest.raises(ValueError, match=r"summary.json: a full/multitask_sts result names no seed"):
        base_size.finished("full/multitask_sts", 42, _args(tmp_path))


def test_a_resumed_run_times_its_last_process_or_reports_no_step_time():
    long = base_size.step_time({"train_runtime": 300.0, "train_steps_per_second": 1 / 1.5})
    assert long == {"step_s": pytest.approx(1.5), "timed_steps": 200}
    # resumed at its last checkpoint: 10 steps (or none) say nothing about a step's time
    assert base_size.step_time({"train_runtime": 40.0, "train_steps_per_second": 0.25})["step_s"] is None
    assert base_size.step_time({"train_runtime": 5.0, "train_steps_per_second": 0.0})["step_s"] is None


def test_a_stopped_sweep_stops_the_run_it_started(tmp_path, monkeypatch):
    stopped = tmp_path / "stopped"
    child = (  # as a run started by a background sweep: SIGINT ignored (a shell's `&`), SIGTERM checkpoints
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(stopped)!r}, 'w').write('saved'), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "train.log"
    _stop_when_ready(monkeypatch, log)
    with pytest.raises(SystemExit):
        base_size.train([sys.executable, "-c", child], log, tmp_path / "peaks.json")
    assert stopped.read_text() == "saved"  # the run got SIGTERM (checkpoint, then stop) and was waited for


def test_a_sweep_stopped_again_while_waiting_leaves_no_run_behind(tmp_path, monkeypatch):
    child = (  # a run that is still preparing and does not stop on the first signal
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "train.log"
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        process = started[-1]
        real_wait = process.wait

        def wait(timeout=None):
            if timeout is not None:  # the sweep's wait for the checkpoint, cut short by a second SIGTERM
                raise SystemExit(143)
            return real_wait()

        process.wait = wait
        return process

    _stop_when_ready(monkeypatch, log)
    monkeypatch.setattr(base_size.subprocess, "Popen", recording_popen)
    with pytest.raises(SystemExit):
        base_size.train([sys.executable, "-c", child], log, tmp_path / "peaks.json")
    (process,) = started
    assert process.poll() == -9  # killed, not left training beside the next sweep


def test_a_summary_keeps_what_this_version_does_not_name_and_refuses_what_it_cannot_read(tmp_path):
    summary = _recorded_summary(tmp_path)
    summary["tune/lora_r8_removed"] = [{"seed": 0, "eval_classification_accuracy": 0.9, "eval_stsb_spearman": 0.8}]
    (tmp_path / "out" / "summary.json").write_text(json.dumps(summary))
    flags = ["--data_dir", "c", "--stsb_dir", "s", "--runs_dir", str(tmp_path / "runs"), "--output_dir"]
    assert base_size.main([*flags, str(tmp_path / "out"), "--table_only"]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tune/lora_r8_removed"][0]["seed"] == 0

    summary["full/multitask_sts"].append(dict(summary["full/multitask_sts"][0]))
    (tmp_path / "out" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="full/multitask_sts holds seed 42 twice"):
        base_size.recorded(tmp_path / "out")
    (tmp_path / "out" / "summary.json").write_text("{")
    with pytest.raises(ValueError, match=r"summary.json is not JSON"):
        base_size.recorded(tmp_path / "out")


def test_a_one_seed_scenario_counts_the_seed_it_recorded(tmp_path):
    (tmp_path / "out").mkdir()
    mined = {"full/retrieval_sts_mined": [{"seed": 42, "recall@1": 80.0}]}
    (tmp_path / "out" / "summary.json").write_text(json.dumps(mined))
    assert base_size.seeds_of("full/retrieval_sts_mined", _args(tmp_path, "--seeds", "43", "44")) == [42]
    assert base_size.seeds_of("full/retrieval_sts", _args(tmp_path, "--seeds", "43", "44")) == [43, 44]
    assert base_size.seeds_of("full/retrieval_sts_mined", _args(tmp_path / "fresh", "--seeds", "43", "44")) == [43]
