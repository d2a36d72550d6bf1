"""benchmarks/overhead.py: top-level ATen ops counted once each (nested ones not again), views apart, backward ops
in, the collator's ops out, composite ops that called nothing marked idle; a case for every task type's loss; the small
run's tables, files and last three lines."""

import json
import re
import subprocess
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import overhead  # noqa: E402


def test_nested_ops_count_once_and_views_are_apart():
    weight = torch.randn(2, 3)

    def known():
        x = torch.ones(4, 3)  # ones, which calls empty and fill_
        y = F.linear(x, weight)  # linear, which calls t (transpose, as_strided) and matmul (mm)
        return y.view(8).sum()  # view (a view op), sum

    _, events = overhead.profiled(known)
    counts = overhead.top_level_ops(events)
    assert counts == Counter(ones=1, linear=1, view=1, sum=1)
    assert overhead.kernel_ops(counts) == Counter(ones=1, linear=1, sum=1)
    every = Counter(e.name for e in events if e.name.startswith("aten::"))
    assert every["aten::mm"] == 1 and every["aten::empty"] >= 1  # there, but inside linear and ones


def test_backward_ops_count_and_the_collators_do_not():
    weight = torch.randn(2, 3, requires_grad=True)

    def step():
        with torch.profiler.record_function(f"{overhead.DATA_LOADING}#_SingleProcessDataLoaderIter.__next__"):
            x = torch.ones(4, 3)  # the collator's tensor
        F.linear(x, weight).sum().backward()

    _, events = overhead.profiled(step)
    counts = overhead.top_level_ops(events, skip_under=(overhead.DATA_LOADING,))
    assert "ones" not in counts and counts["linear"] == 1 and counts["sum"] == 1
    assert counts["mm"] == 1  # MmBackward0's, under the autograd engine (the forward's is linear's own)
    assert overhead.top_level_ops(events)["ones"] == 1


def test_composite_ops_that_call_nothing_are_idle():
    x = torch.randn(4, 3)

    def casts():
        x.float()  # already float32: `to` returns x
        x.double()  # a real cast: `to` calls _to_copy
        F.dropout(x, 0.1, training=False)  # eval mode: returns x
        F.dropout(x, 0.1, training=True)  # calls native_dropout

    _, events = overhead.profiled(casts)
    assert overhead.top_level_ops(events) == Counter(to=2, dropout=2)
    assert overhead.idle_ops(events) == Counter(to=1, dropout=1)
    assert overhead.is_composite("to") and not overhead.is_composite("mm")


def test_host_reads_count_each_read_back_once():
    x = torch.randn(4)

    def reads():
        float(x.sum())  # item, which calls _local_scalar_dense
        bool(x.sum() > 0)  # is_nonzero, which calls item
        x[x > 0]  # boolean indexing: nonzero sizes the result by the data
        with torch.profiler.record_function(f"{overhead.DATA_LOADING}#_SingleProcessDataLoaderIter.__next__"):
            int(x.argmax())  # the collator's: not the step's
        return x * 2

    _, events = overhead.profiled(reads)
    assert overhead.host_reads(events, skip_under=(overhead.DATA_LOADING,)) == 3
    assert overhead.host_reads(events) == 4
    # The fused AdamW's CPU kernel reads each parameter's step count; its CUDA kernel does not: not counted.
    weight = torch.nn.Parameter(torch.randn(3))
    weight.grad = torch.randn(3)
    optimizer = torch.optim.AdamW([weight], fused=True)
    _, events = overhead.profiled(optimizer.step)
    assert any(e.name == "aten::_local_scalar_dense" for e in events) and overhead.host_reads(events) == 0


def test_each_change_appends_one_row_under_one_header(tmp_path):
    def summary(sentmtl, idle, reads):
        return {
            "train": {
                "plain": {"kernel_per_step": {"mm": 400.0}, "idle_per_step": {}, "host_reads_per_step": 3.0},
                "sentmtl": {
                    "kernel_per_step": {"mm": sentmtl},
                    "idle_per_step": {"to": idle},
                    "host_reads_per_step": reads,
                },
            },
            "train_ops_ratio": sentmtl / 400,
            "embed_ops_ratio": 0.93,
            "graph_breaks_total": 1,
            "arguments": {"cases": ["none"]},
        }

    path = tmp_path / "changes.md"
    overhead.record_change(path, "before", summary(520.0, 20.0, 5.0), "6.7e-07")
    row = overhead.record_change(path, "a | b", summary(480.5, 18.0, 4.0), "–")
    assert row == "| a \\| b | 480.5 | 18 | 4 | 400.0 | 1.201 | 0.93 | not run | – |"
    text = path.read_text()
    assert text.count("| change |") == 1 and text.endswith(row + "\n")
    assert "| before | 520.0 | 20 | 5 | 400.0 | 1.300 | 0.93 | not run | 6.7e-07 |" in text


def test_every_task_type_has_a_loss_case():
    from sentmtl.model.task_types import TASK_TYPES

    builtin = {"classification", "multilabel", "score", "regression", "similarity", "contrastive", "distillation"}
    assert builtin <= set(TASK_TYPES)
    assert {f"loss_{name}" for name in builtin} <= set(overhead.GRAPH_CASES)
    assert {"forward_default_tasks", "forward_prompts", "forward_lora"} <= set(overhead.GRAPH_CASES)


def test_small_run_writes_the_tables_and_ends_with_the_three_lines(tmp_path):
    out = tmp_path / "overhead"
    result = subprocess.run(
        [sys.executable, "benchmarks/overhead.py", "--small", "--output_dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    last = result.stdout.strip().splitlines()[-3:]
    assert re.fullmatch(r"train_ops_ratio: \d+\.\d\d", last[0]), last
    assert re.fullmatch(r"embed_ops_ratio: \d+\.\d\d", last[1]), last
    assert re.fullmatch(r"graph_breaks: \d+", last[2]), last
    summary = json.loads((out / "summary.json").read_text())
    assert f"train_ops_ratio: {summary['train_ops_ratio']:.2f}" == last[0]
    assert f"graph_breaks: {summary['graph_breaks_total']}" == last[2]
    for path in ("plain", "sentmtl"):
        row = summary["train"][path]
        assert len(row["kernel_each_step"]) == 2  # --small profiles steps 2-3
        assert sum(row["kernel_per_step"].values()) == sum(row["kernel_each_step"]) / 2
        assert not set(row["kernel_per_step"]) & overhead.VIEW_OPS
        assert row["kernel_per_step"]["linear"] >= 2 * 6  # six linear layers per encoder layer, forward alone
        assert row["host_reads_per_step"] >= 1  # the Trainer's NaN filter reads the loss back at every step
    table = (out / "overhead.md").read_text()
    assert "| sentmtl.encode |" in table and "| forward_prompts |" in table
