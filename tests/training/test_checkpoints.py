"""sentmtl/training/checkpoints.py: a missing checkpoint is a clear error. (The atomic final save, over a trained
model: tests/e2e/test_run_mtl.py.)"""

from helpers import tiny_run_flags

from sentmtl.training.run import main


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    flags = tiny_run_flags(
        tiny_encoder_dir, synthetic_csv, tmp_path / "x", "--resume_from_checkpoint", str(tmp_path / "nope")
    )
    assert main(flags) == 1
    assert "not a complete checkpoint (no trainer_state.json)" in capsys.readouterr().err
