"""benchmarks/gpu_check.py's run machinery: items under the wall-time budget (skipped with a note, stopped at its
end, a failure recorded and the run going on), the report replaced whole, the stand-in's shape, the embedding and
profile summaries; speed.py's profiler counts. The whole dry run is tests/e2e/test_gpu_check_dry_run.py."""

import argparse
import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import speed  # noqa: E402


def _context(tmp_path, budget_s=100.0, dry_run=False):
    return gpu_check.Context(
        args=argparse.Namespace(),
        dry_run=dry_run,
        device="cpu",
        data_dir="corpus",
        prepared=tmp_path,
        output_dir=tmp_path,
        scratch=tmp_path,
        encoder=tmp_path,
        steady=(1, 1, 2),
        batch_size=8,
        repeats=1,
        budget_s=budget_s,
    )


def _item(name, estimate_s=10.0, outcome=None, cuda_only=None):
    def run(ctx, timeout):
        if isinstance(outcome, BaseException):
            raise outcome
        return {"timeout": timeout}, [f"{name} ran"]

    return gpu_check.Item(name, estimate_s, run, cuda_only)


def test_an_item_runs_with_what_is_left_of_the_budget_as_its_limit(tmp_path):
    record, lines = gpu_check.run_item(_item("a"), _context(tmp_path, budget_s=100))
    assert record["status"] == "ok" and 99 < record["result"]["timeout"] <= 100 and lines == ["a ran"]


def test_an_item_whose_estimate_does_not_fit_is_skipped_with_a_note(tmp_path):
    record, lines = gpu_check.run_item(_item("big", estimate_s=60), _context(tmp_path, budget_s=30))
    assert record["status"] == "skipped" and "~60 s estimated, 30 s left of the 30 s budget" in record["note"]
    assert lines[0].startswith("big: skipped")
    # On the dry run the GPU estimates do not apply: an item starts while any budget is left.
    assert gpu_check.run_item(_item("big", estimate_s=60), _context(tmp_path, 30, dry_run=True))[0]["status"] == "ok"
    assert gpu_check.run_item(_item("late"), _context(tmp_path, 0, dry_run=True))[0]["status"] == "skipped"


def test_a_cuda_only_item_is_skipped_on_the_dry_run_and_runs_on_a_gpu(tmp_path):
    item = _item("fp16", cuda_only="fp16 autocast is CUDA's")
    assert gpu_check.run_item(item, _context(tmp_path, dry_run=True))[0]["note"] == "fp16 autocast is CUDA's"
    assert gpu_check.run_item(item, _context(tmp_path))[0]["status"] == "ok"


def test_failures_and_timeouts_are_recorded_and_the_run_goes_on(tmp_path):
    ctx = _context(tmp_path)
    failed, lines = gpu_check.run_item(_item("a", outcome=RuntimeError("train_sentmtl failed: boom")), ctx)
    assert failed["status"] == "failed" and "boom" in failed["error"] and "FAILED" in lines[0]
    stopped, lines = gpu_check.run_item(_item("b", outcome=subprocess.TimeoutExpired("python", 5)), ctx)
    assert stopped["status"] == "timed_out" and "TIMED OUT" in lines[0]
    ran, _ = gpu_check.run_item(_item("c", outcome=gpu_check.ItemFailed({"exit_code": 1, "error": "x"})), ctx)
    assert ran["status"] == "failed" and ran["result"]["exit_code"] == 1


def test_the_report_is_replaced_whole(tmp_path):
    path = tmp_path / "gpu_check.json"
    gpu_check.write_report({"items": [1]}, path)
    gpu_check.write_report({"items": [1, 2]}, path)
    assert json.loads(path.read_text()) == {"items": [1, 2]} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_unknown_item_names_are_refused_and_the_old_skip_flags_still_work(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--only", "train_minilm"])
    assert "no item 'train_minilm'; the items are train_minilm_fp32" in capsys.readouterr().err
    assert gpu_check.parse_args(["--skip_tests", "--skip_speed"]).skip == {"gpu_tests", "speed_py"}


def test_the_items_are_in_priority_order_with_an_estimate_each():
    names = [item.name for item in gpu_check.ITEMS]
    assert names[:4] == ["train_minilm_fp32", "embed_minilm", "train_bert_base_bf16", "accuracy_minilm"]
    assert names[-1] == "speed_py" and len(set(names)) == len(names)
    # The targets' items fit the default budget with room for the environment and the stand-in's build.
    assert sum(item.estimate_s for item in gpu_check.ITEMS[:4]) < gpu_check.BUDGET_S - 60


def test_the_stand_in_is_bert_base_shaped_with_the_tokenizers_vocabulary(tiny_encoder_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertConfig

    folder = gpu_check.bert_base_standin(tiny_encoder_dir, tmp_path / "standin", gpu_check.TINY_BERT)
    config = AutoConfig.from_pretrained(folder)
    assert config.vocab_size == len(AutoTokenizer.from_pretrained(tiny_encoder_dir)) and config.hidden_size == 64
    defaults = BertConfig()  # what the GPU run builds: bge-base / e5-base's shape
    assert (defaults.hidden_size, defaults.num_hidden_layers, defaults.vocab_size) == (768, 12, 30522)


def test_the_embedding_summary_compares_the_default_and_the_fastest_paths():
    result = {
        "n": 100,
        "batch_size": 64,
        "times": {"sentmtl_default": [0.5], "sentmtl_bf16": [0.2], "st_fp32": [1.0], "st_fp16": [0.4]},
        "precision": {"sentmtl_default": "fp32", "sentmtl_bf16": "bf16", "st_fp32": "fp32", "st_fp16": "fp16"},
        "quality": {"sentmtl_bf16": {"min_cosine": 0.98}, "sentmtl_default": {"min_cosine": 1.0}},
        "skipped": {"st_fp16_unpadded": "flash_attn is not importable here"},
    }
    summary, lines = gpu_check.summarise_embed(result, "MiniLM")
    # bf16 is faster but below the 0.99 cosine bar: the fastest sentmtl path that counts is the default.
    assert summary["speedup_vs_st_fp32"] == pytest.approx(2.0) and summary["fastest_sentmtl"] == "sentmtl_default"
    assert summary["fastest_st"] == "st_fp16" and summary["fastest_vs_fastest"] == pytest.approx(0.8)
    assert "= 2.00x SentenceTransformer.encode fp32" in lines[0] and "= 0.80x ST's fastest" in lines[0]
    assert lines[-1] == "| st_fp16_unpadded | – | skipped: flash_attn is not importable here | – |"


def test_the_profile_table_names_the_cpu_proxy_for_host_syncs():
    rows = {
        "trainer": {"precision": "fp32", "samples_per_s": 10.0, "e2e_samples_per_s": 9.0, "sync_calls_per_step": 2.0},
        "sentmtl": {"precision": "fp32", "samples_per_s": 20.0, "e2e_samples_per_s": 18.0, "kernels_per_step": None},
    }
    lines = gpu_check.profile_table(rows, dry_run=True)
    assert "host syncs / step (CPU proxy: .item() outside the optimizer)" in lines[0]
    assert lines[2:] == [
        "| plain Trainer (fp32) | 10.0 | 9.0 | – | – | 2.0 |",
        "| sentmtl (fp32) | 20.0 | 18.0 | – | – | – |",
    ]


def test_profile_counts_leave_out_the_optimizers_cpu_side_item_calls():
    import torch

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(2):
            loss = model(torch.randn(2, 4)).sum()
            loss.backward()
            optimizer.step()  # reads each parameter's CPU step counter with .item(): no sync on a GPU either
            loss.item()  # this one would be
    counts = speed.profile_counts(profiler.events(), steps=2, on_gpu=False)
    assert counts["sync_calls_per_step"] == 1 and counts["kernels_per_step"] is None
    assert counts["sync_events"]["aten::_local_scalar_dense"] > 1


def test_profile_counts_on_a_gpu_count_the_blocking_runtime_calls_less_the_windows_own():
    from types import SimpleNamespace

    import torch

    def event(name, device=torch.autograd.DeviceType.CPU, parent=None, us=0):
        return SimpleNamespace(name=name, device_type=device, cpu_parent=parent, device_time_total=us)

    step = event("Optimizer.step#AdamW.step")
    events = [
        *[event("volta_sgemm", torch.autograd.DeviceType.CUDA, us=500) for _ in range(6)],
        event("cudaStreamSynchronize"),  # a loss.item()
        event("cudaStreamSynchronize_v2"),
        event("cudaMemcpyAsync"),  # does not block the host
        event("cudaDeviceSynchronize"),  # the window's own, at its end
        event("aten::_local_scalar_dense"),
        event("aten::_local_scalar_dense", parent=step),
    ]
    counts = speed.profile_counts(events, steps=2, on_gpu=True)
    assert counts["kernels_per_step"] == 3 and counts["gpu_busy_ms_per_step"] == 1.5
    assert counts["sync_calls_per_step"] == 1 and counts["sync_counted_as"] == "CUDA runtime sync calls"
    assert counts["sync_events"]["aten::_local_scalar_dense"] == 1
    assert counts["sync_events"][".item() outside the optimizer"] == 0.5
