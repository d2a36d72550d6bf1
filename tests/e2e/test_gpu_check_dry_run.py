"""The GPU check script, run as it must be before any device time is spent: --dry-run on the CPU."""

import json

import pytest

# The device run's items in priority order; the dry run leaves out speed.py (its own run), and fp16 is CUDA's.
ITEMS = [
    "train_minilm_fp32",
    "embed_minilm",
    "train_bert_base_bf16",
    "accuracy_minilm",
    "train_minilm_fp32_compiled",
    "embed_bert_base",
    "train_bert_base_fp32",
    "train_minilm_bf16",
    "gpu_tests",
    "train_default_bf16",
    "train_default_fp16",
]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: every item of the device run on tiny sizes, without CUDA (CI runs this);
    each item's result is in gpu_check.json as soon as it finishes, not only at the end."""
    import subprocess
    import sys
    import time

    from helpers import REPO_ROOT

    prepared = tmp_path / "prepared"
    script = str(REPO_ROOT / "benchmarks" / "gpu_check.py")
    subprocess.run(
        [sys.executable, script, "--prepare", "--skip_wheels", "--prepared_dir", str(prepared)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out, log = tmp_path / "out", tmp_path / "log.txt"
    command = [sys.executable, script, "--dry-run", "--skip_speed", "--prepared_dir", str(prepared)]
    partial_reports = set()  # how many items a report held while the run was still going
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--output_dir", str(out)], stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the dry run outlasted 900 s:\n{log.read_text()[-3000:]}")
            if (out / "gpu_check.json").is_file():  # replaced whole each time (gpu_check.write_report)
                report = json.loads((out / "gpu_check.json").read_text())
                if not report["finished"]:
                    partial_reports.add(len(report["items"]))
            time.sleep(0.5)
    stdout = log.read_text()
    assert process.returncode == 0, stdout[-5000:]
    report = json.loads((out / "gpu_check.json").read_text())
    records = {r["name"]: r for r in report["items"]}
    assert report["dry_run"] and report["finished"] and list(records) == ITEMS
    assert [r["status"] for r in report["items"]] == ["ok"] * (len(ITEMS) - 1) + ["skipped"]
    assert records["train_default_fp16"]["note"] == "fp16 autocast is CUDA's"
    assert len(partial_reports - {0}) >= len(ITEMS) // 2, partial_reports  # written item by item
    elapsed = [r["elapsed_s"] for r in report["items"]]
    assert elapsed == sorted(elapsed)

    for name in ("train_minilm_fp32", "train_bert_base_bf16", "train_bert_base_fp32", "train_minilm_bf16"):
        result = records[name]["result"]
        precision = name.rsplit("_", 1)[1]
        for path in ("trainer", "sentmtl"):
            row = result[path]
            assert row["precision"] == precision and row["samples_per_s"] > 0 and row["e2e_samples_per_s"] > 0
            assert row["sync_calls_per_step"] >= 0 and "CPU proxy" in row["sync_counted_as"]
        assert result["steady_speedup"] > 0 and not result["compiled"]
    compiled = records["train_minilm_fp32_compiled"]["result"]
    assert compiled["compiled"] and compiled["sentmtl"]["samples_per_s"] > 0 and compiled["steady_speedup"] > 0
    for name in ("embed_minilm", "embed_bert_base"):
        result = records[name]["result"]
        assert {"sentmtl_default", "sentmtl_bf16-weights", "st_fp32", "st_fp16"} <= set(result["sentences_per_s"])
        assert result["quality"]["sentmtl_bf16-weights"]["min_cosine"] >= 0.99
        assert result["skipped"] == {
            "sentmtl_fp16-weights": "fp16 weights are for GPUs (encode refuses them on a CPU)",
            "sentmtl_fp16-weights_unpadded": "flash attention needs CUDA",
            "st_fp16_unpadded": "flash attention needs CUDA",
        }
    accuracy = records["accuracy_minilm"]["result"]
    assert accuracy["task_a_accuracy"] > 0 and accuracy["stsb_spearman"] is not None
    assert records["gpu_tests"]["result"]["exit_code"] == 0
    assert records["train_default_bf16"]["result"]["task_a_accuracy"] > 0

    # Each item's summary is printed as it finishes, in the plan's order.
    starts = [
        "summary: train MiniLM fp32",
        "summary: embed MiniLM",
        "summary: train BERT-base stand-in bf16",
        "summary: accuracy MiniLM",
        "summary: embed BERT-base stand-in",
        "summary: train BERT-base stand-in fp32",
        "summary: train MiniLM bf16",
        "summary: gpu tests:",
        "summary: train default configuration bf16",
        "summary: train_default_fp16: skipped",
        "summary: wall ",
    ]
    positions = [stdout.find(start) for start in starts]
    assert -1 not in positions and positions == sorted(positions), dict(zip(starts, positions))
    assert "| sentmtl (fp32) |" in stdout and "host syncs / step (CPU proxy" in stdout

    # Out of budget: every item is skipped with a note, and the report still says so.
    quick = subprocess.run(
        [*command, "--budget_s", "0", "--output_dir", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert quick.returncode == 0, quick.stderr[-2000:]
    skipped = json.loads((tmp_path / "none" / "gpu_check.json").read_text())["items"]
    assert [r["status"] for r in skipped] == ["skipped"] * len(ITEMS)
    assert "s left of the 0 s budget" in skipped[0]["note"]
