"""benchmarks/overhead.py: top-level ATen ops counted once each (not again for the ops they call), views left out of
the kernel-launching count, a graph break found with its reason, and a dry run that ends on the three lines."""

import json
import re
import sys
from types import SimpleNamespace

import torch
from helpers import REPO_ROOT, synthetic_rows

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import overhead  # noqa: E402


def _known_ops(x, w):
    y = torch.nn.functional.linear(x, w)  # aten::linear, which calls aten::t and aten::matmul → aten::mm
    z = y.view(-1).to(torch.float32)  # aten::view; aten::to the dtype it has: it calls nothing
    return (z * 2).sum().to(torch.float64)  # aten::mul (its scalar's aten::to nested), aten::sum, aten::to (a copy)


def test_top_level_ops_are_counted_once_and_views_launch_nothing():
    x, w = torch.randn(4, 3), torch.randn(5, 3)
    with torch.no_grad():
        ops = overhead.profile_ops(lambda: _known_ops(x, w))
    # No t, matmul or mm (inside linear), nor the scalar's to (inside mul), nor _to_copy (inside the real to).
    assert ops == {"linear": 1, "view": 1, overhead.NOOP_CAST: 1, "mul": 1, "sum": 1, "to": 1}
    assert overhead.kernel_launching(ops) == {"linear": 1, overhead.NOOP_CAST: 1, "mul": 1, "sum": 1, "to": 1}
    count = overhead.OpCount("known", 1, ops)
    assert (count.per_unit(), count.per_unit(kernels_only=True)) == (6, 5)


def test_ops_under_ranges_count_and_ops_under_ops_do_not():
    """Autograd nodes and record_function ranges are not ATen ops: what runs under them is top-level, unless an
    ATen op is above it further up."""

    def event(name, parent=None):
        made = SimpleNamespace(name=name, cpu_parent=parent, cpu_children=[])
        if parent is not None:
            parent.cpu_children.append(made)
        return made

    step = event("Optimizer.step#AdamW.step")
    fused = event("aten::_fused_adamw_", step)
    node = event("MmBackward0", event("autograd::engine::evaluate_function: MmBackward0"))
    linear = event("aten::linear")
    inner = event("aten::mm", event("some_range", event("aten::matmul", linear)))
    cast = event("aten::to", step)
    events = [step, fused, node, event("aten::mm", node), event("aten::t", node), linear, inner, cast]
    assert overhead.top_level_ops(events) == {"_fused_adamw_": 1, "mm": 1, "t": 1, "linear": 1, overhead.NOOP_CAST: 1}
    event("aten::_to_copy", cast)  # now the cast copies
    assert overhead.top_level_ops([cast, *cast.cpu_children]) == {"to": 1}


def test_a_graph_break_is_found_with_its_reason():
    def clean(x):
        return (x * 2).sum()

    def broken(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y.sum()

    assert overhead.graph_breaks(clean, (torch.randn(3),), {})["breaks"] == 0
    result = overhead.graph_breaks(broken, (torch.randn(3),), {})
    assert result["breaks"] == 1 and result["graphs"] == 2
    assert "test_overhead.py" in result["reasons"][0]  # the line that broke the graph


def test_every_flag_has_help():
    parser = overhead.build_parser()
    assert all(action.help for action in parser._actions if action.option_strings)


def _tiny_corpus(folder):
    """The UCI layout (`sentence<TAB>label` per line, three files) with 40 synthetic sentences per site."""
    folder.mkdir()
    for seed, name in enumerate(("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt")):
        rows = synthetic_rows(40, seed=seed)
        lines = [f"{s}\t{label}\n" for s, label in zip(rows["sentence"], rows["label"])]
        (folder / name).write_text("".join(lines))
    return folder


def test_a_dry_run_ends_on_the_three_lines_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "out"
    cases = ["forward", "loss_contrastive"]
    argv = ["--dry_run", "--data_dir", str(_tiny_corpus(tmp_path / "corpus")), "--output_dir", str(out)]
    assert overhead.main([*argv, "--cases", *cases]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"train_ops_ratio: \d+\.\d\d", lines[-3])
    assert re.fullmatch(r"embed_ops_ratio: \d+\.\d\d", lines[-2])
    assert re.fullmatch(r"graph_breaks: \d+", lines[-1])
    summary = json.loads((out / "summary.json").read_text())
    plain, ours = summary["train"]
    assert (plain["path"], ours["path"]) == ("plain Trainer recipe", "sentmtl default run")
    assert ours["tasks"] == "classification (classification), sentiment (score), distillation (distillation)"
    assert plain["optimizer"] == ours["optimizer"] == "AdamW(fused=True)"
    assert plain["precision"] == ours["precision"] == "fp32"
    for row in summary["train"] + summary["embed"]:
        assert row["top_level_per_unit"] > row["kernel_launching_per_unit"] > 0
        assert sum(row["ops_per_unit"].values()) == row["top_level_per_unit"]
    assert list(summary["graph_breaks"]) == cases
    report = (out / "overhead.md").read_text()
    assert (
        "| sentmtl.encode |" in report
        and "| loss_contrastive |" in report
        and report.strip().splitlines()[-3:] == lines[-3:]
    )
