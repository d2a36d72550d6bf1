"""Two processes: run_mtl.py under `accelerate launch` (2 CPU processes over gloo) against one process, stop decisions
taken together, and two processes sharing the teacher cache. The launched runs are marked slow where they take
minutes."""

import json
import math
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, counting_miner, counting_teacher, exact_flags, run_results, texts_table, tiny_run_flags

from sentmtl.data.plan import tasks_from_flags
from sentmtl.data.sources import build_sources
from sentmtl.data.teacher_cache import teacher_vectors
from sentmtl.training.run import main, parse_args
from sentmtl.training.trainer import all_processes_agree


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--freeze_backbone"]])
def test_two_process_accelerate_run(tiny_encoder_dir, synthetic_csv, tmp_path, extra):
    out = tmp_path / "ddp"
    run_two_processes(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra))
    assert {"eval_classification_accuracy", "eval_classification_f1"} <= set(
        json.loads((out / "eval_results.json").read_text())
    )
    train = json.loads((out / "train_results.json").read_text())
    # 2 processes × 8 per device = 16 sentences per step (one process would take 8 per step).
    model_args, data_args, training_args_ = parse_args(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x"))
    sources = build_sources(tasks_from_flags(model_args, data_args, training_args_), data_args, 42)
    n_train = sources[0].train.num_rows
    assert train["global_step"] == 2 * math.ceil(n_train / 16)
    backbone_frozen = train["trainable_parameters"] < train["total_parameters"]
    assert backbone_frozen == bool(extra)


def run_two_processes(flags: list[str]) -> None:
    """run_mtl.py under `accelerate launch` with 2 processes. `--multi_gpu` makes accelerate start them with
    torchrun; on a machine without GPUs they run on the CPU over gloo (`--cpu --num_processes 2` starts ONE process
    unless it runs under mpirun)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "run_mtl.py",
        *flags,
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_log_the_loss_of_one(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Under DDP the loss was multiplied by the number of processes (`average_tokens_across_devices`)."""
    assert (
        main(exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--per_device_train_batch_size", "16")) == 0
    )
    run_two_processes(exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two"))  # 2 × 8 per device = 16 per step
    one, two = run_results(tmp_path / "one"), run_results(tmp_path / "two")
    assert two["global_step"] == one["global_step"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=2e-2)  # the encoder's own dropout differs


# Matryoshka self-distillation compares the rows of a batch too (each prefix's cosine matrix against the full one's).
_SELF_DISTILLATION = ["--matryoshka_dims", "16", "8", "4", "--matryoshka_self_distillation", "10"]


@pytest.mark.parametrize("extra", [[], _SELF_DISTILLATION], ids=["distillation", "matryoshka_self_distillation"])
def test_two_processes_with_a_row_comparing_loss_train_and_evaluate_as_one(
    encoder_without_dropout, synthetic_csv, tmp_path, extra
):
    """#20: the relational distillation loss compares the rows of a batch; computed on each process's share it made
    2 processes × 8 rows differ from 1 × 16, and so did the per-row means of a last batch split 2 / 1. Every task's
    loss now sees the gathered global batch (and the evaluation's losses come from gathered outputs): the two runs
    reach the same training loss and the same evaluation."""
    tiny_encoder_dir = encoder_without_dropout
    flags = ["--distillation_weight", "10", "--eval_strategy", "epoch", *extra]
    one_flags = exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--per_device_train_batch_size", "16")
    assert main([*one_flags, *flags]) == 0
    run_two_processes([*exact_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two"), *flags])
    one, two = run_results(tmp_path / "one"), run_results(tmp_path / "two")
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    one, two = (run_results(tmp_path / name, "eval_results.json") for name in ("one", "two"))
    for key in (
        "eval_loss",
        "eval_distillation_loss",
        "eval_classification_loss",
        "eval_sentiment_loss",
        "eval_classification_accuracy",
    ):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key


def _agree_worker(rank, port, results):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = all_processes_agree(torch.tensor(rank == 1))  # only rank 1 says yes
    finally:
        torch.distributed.destroy_process_group()


def test_stop_decisions_are_taken_by_all_processes_together():
    """The non-finite-loss stop and the interrupt were per process: the rank that stopped left the others waiting
    in the next all-reduce forever. Now every rank takes the same decision."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_agree_worker, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: False, 1: False}


def _compute_in_another_process(folder, log):
    teacher = counting_teacher(delay=1.0)
    vectors = teacher_vectors(texts_table(12), "text", teacher, folder)
    with open(log, "a") as handle:
        handle.write(f"{len(teacher.calls)} {np.asarray(vectors['vectors']).sum()}\n")


def test_processes_sharing_a_cache_compute_once(tmp_path):
    """As the ranks of one DDP run do: one computes and writes while the other waits on the lock, then reads."""
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "log.txt"
    processes = [context.Process(target=_compute_in_another_process, args=(tmp_path / "cache", log)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    lines = sorted(log.read_text().split("\n")[:-1])
    assert [line.split()[0] for line in lines] == ["0", "1"]  # one computed, the other read
    assert len({line.split()[1] for line in lines}) == 1  # the same vectors
    assert not list((tmp_path / "cache").glob("*.tmp"))


def _mine_in_another_process(folder, log):
    from sentmtl.data.mining import mine_hard_negatives
    from sentmtl.tasks.mining_settings import MiningSettings

    miner = counting_miner(delay=1.0)
    anchors, positives = [f"anchor {i} ." for i in range(12)], [f"positive {i} ." for i in range(12)]
    mined, _ = mine_hard_negatives(anchors, positives, miner, MiningSettings(num_negatives=2), cache_dir=folder)
    with open(log, "a") as handle:
        handle.write(f"{len(miner.calls)} {mined!r}\n")


def test_processes_sharing_the_mining_cache_mine_once(tmp_path):
    """Mined hard negatives under DDP: each rank prepares the data; one mines and writes while the other waits on the
    lock, then reads the same negatives."""
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "log.txt"
    processes = [context.Process(target=_mine_in_another_process, args=(tmp_path / "cache", log)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    lines = sorted(log.read_text().split("\n")[:-1])
    assert [line.split()[0] for line in lines] == ["0", "2"]  # one embedded anchors and documents, the other read
    assert len({line.split(" ", 1)[1] for line in lines}) == 1  # the same negatives
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_two_processes_train_lora_adapters_as_one(encoder_without_dropout, synthetic_csv, tmp_path):
    """LoRA under DDP: the adapters (and the projection and heads) of 2 processes × 8 rows end as those of one process
    with the same global batch of 16. The frozen encoder is not in DDP's reducer; the adapters are."""
    from safetensors.torch import load_file

    lora = ["--lora_r", "4", "--lora_dropout", "0"]
    one_flags = exact_flags(
        encoder_without_dropout, synthetic_csv, tmp_path / "one", "--per_device_train_batch_size", "16"
    )
    assert main([*one_flags, *lora]) == 0
    run_two_processes([*exact_flags(encoder_without_dropout, synthetic_csv, tmp_path / "two"), *lora])
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert sorted(one) == sorted(two) and any("lora_B" in key for key in one)
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=key)
    assert any(float(one[key].abs().max()) > 0 for key in one if "lora_B" in key)  # the adapters did train
    assert run_results(tmp_path / "two")["train_loss"] == pytest.approx(
        run_results(tmp_path / "one")["train_loss"], rel=1e-4
    )


@pytest.mark.slow
def test_two_compiled_processes_train_as_two_eager_ones(encoder_without_dropout, synthetic_csv, tmp_path):
    """--torch_compile under DDP (2 gloo processes; the losses gather rows across them inside the compiled forward):
    the weights and the loss of the eager pair, to the bit with aot_eager (inductor measured 1e-8 of the loss)."""
    from safetensors.torch import load_file

    compiled = ["--torch_compile_backend", "aot_eager"]
    for name, extra in (("eager", []), ("compiled", compiled)):
        run_two_processes([*exact_flags(encoder_without_dropout, synthetic_csv, tmp_path / name), *extra])
    eager, compiled = (load_file(tmp_path / name / "model.safetensors") for name in ("eager", "compiled"))
    assert sorted(eager) == sorted(compiled)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-6, atol=1e-7, msg=key)
    assert run_results(tmp_path / "compiled")["train_loss"] == pytest.approx(
        run_results(tmp_path / "eager")["train_loss"], rel=1e-6
    )
