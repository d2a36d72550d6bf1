"""The GPU check script, run as it must be before any device time is spent: --dry-run on the CPU."""

import json

import pytest


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: every step of the device run but CUDA, on tiny sizes (CI runs this)."""
    import subprocess
    import sys

    from helpers import REPO_ROOT

    prepared = tmp_path / "prepared"
    script = str(REPO_ROOT / "benchmarks" / "gpu_check.py")
    subprocess.run(
        [sys.executable, script, "--prepare", "--skip_wheels", "--prepared_dir", str(prepared)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = subprocess.run(
        [
            sys.executable,
            script,
            "--dry-run",
            "--skip_speed",
            "--prepared_dir",
            str(prepared),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["dry_run"] and report["gpu_tests"]["exit_code"] == 0
    assert [r["precision"] for r in report["training"]] == ["fp32", "bf16"]
    assert all(r["exit_code"] == 0 and r["task_a_accuracy"] > 0 for r in report["training"])
    assert "summary: train bf16:" in result.stdout
