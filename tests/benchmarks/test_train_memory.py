"""benchmarks/train_memory.py: each variant trains in its own process under each heap setting, records RssAnon per
step and stops at the end of training; the summary's warm-up cut, the table's ratio against the first variant."""

import json
import sys

import pytest
from helpers import REPO_ROOT, tiny_run_flags

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import train_memory  # noqa: E402


def test_variants_train_in_their_own_processes_and_are_compared(tiny_encoder_dir, synthetic_csv, tmp_path):
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "unused")
    del flags[flags.index("--output_dir") : flags.index("--output_dir") + 2]
    variants = {"full": flags, "frozen": [*flags, "--freeze_backbone"]}
    out = tmp_path / "out"
    results = train_memory.compare(variants, 5, 2, ["mapped"], tmp_path / "work", out)  # default: the same, no env
    records = json.loads((out / "train_memory.json").read_text())["records"]
    for name in variants:
        for heap in ("mapped",):
            assert records[name][heap]["heap"] == {"MALLOC_MMAP_THRESHOLD_": "65536"}
            rows = records[name][heap]["steps"]
            assert [r[0] for r in rows] == [0, 1, 2, 3]  # the last step has no end to time it by
            assert all(0 < low <= high and seconds > 0 for _, low, high, seconds in rows)
            assert results[name][heap]["peak_after_warmup_gb"] == max(r[2] for r in rows[2:])
            # it stopped at the end of training: no final evaluation, nothing saved
            assert not (tmp_path / "work" / f"{name}_{heap}" / "model" / "eval_results.json").exists()
    table = (out / "train_memory.md").read_text()
    assert "| full | mapped |" in table and "| frozen | mapped |" in table
    assert "| +0% |" in table.split("| full | mapped |")[1].splitlines()[0]
    assert (out / "train_memory.png").is_file()


def test_summary_leaves_the_warm_up_out_of_one_peak_only():
    record = {"setup": 0.5, "steps": [[0, 0.4, 3.0, 2.0], [1, 1.0, 1.5, 1.0], [2, 0.9, 1.6, 3.0], [3, 1.1, 1.4, 1.0]]}
    summary = train_memory.summary(record, warmup=1)
    assert summary["peak_gb"] == 3.0 and summary["peak_after_warmup_gb"] == 1.6
    assert summary["floor_after_warmup_gb"] == 0.9 and summary["steps"] == 4
    assert summary["step_s"] == pytest.approx(5 / 3)  # the mean: alternating kinds of steps have no typical median


def test_the_default_heap_is_glibcs_own_and_the_mapped_one_maps_large_blocks():
    shell = {"PATH": "/bin", "MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_ARENA_MAX": "2"}
    assert train_memory.heap_env("default", shell) == {"PATH": "/bin"}
    assert train_memory.heap_env("mapped", shell) == {"PATH": "/bin", "MALLOC_MMAP_THRESHOLD_": "65536"}


@pytest.mark.parametrize("item, message", [("full", "NAME="), ("=x", "NAME=")])
def test_a_variant_without_a_name_is_refused(item, message):
    with pytest.raises(SystemExit, match=message):
        train_memory.parse_variants([item])


def test_a_variant_given_twice_is_refused():
    with pytest.raises(SystemExit, match="given twice"):
        train_memory.parse_variants(["a=x", "a=y"])
