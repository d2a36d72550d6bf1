"""Row-comparing losses see the global batch under DDP: two gloo processes on CPU with an uneven split of 5 rows give
the same loss and the same gradients as one process with all 5 (sentmtl/model/distributed.py; its single-process
identities: tests/model/test_distributed.py)."""

import datetime
import importlib
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import load_model_file


def _find_losses():
    """The row-comparing losses from wherever sentmtl keeps them (losses.py; task_types.py before it): as a file
    where it imports torch only, else through the package."""
    for name in ("losses", "task_types"):
        for load in (load_model_file, lambda name: importlib.import_module(f"sentmtl.model.{name}")):
            try:
                module = load(name)
                return module.cosent_loss, module.relational_distillation_loss, module.in_batch_negatives_loss
            except (ImportError, OSError, AttributeError):
                continue
    return None


_distributed = load_model_file("distributed")
gather_rows, scale_for_ddp, world = _distributed.gather_rows, _distributed.scale_for_ddp, _distributed.world

_found = _find_losses()
if _found is not None:
    cosent_loss, relational_distillation_loss, in_batch_negatives_loss = _found
else:  # sentmtl's losses mid-refactor: the same math here, so sentmtl.model.distributed is still tested

    def cosent_loss(cosines, scores, scale: float = 20.0):
        differences = scale * (cosines[None, :] - cosines[:, None])
        differences = differences[scores[:, None] > scores[None, :]]
        return torch.logsumexp(torch.cat([differences.new_zeros(1), differences]), dim=0)

    def relational_distillation_loss(student, teacher):
        s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
        off_diagonal = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
        return F.mse_loss((s @ s.T)[off_diagonal], (t @ t.T)[off_diagonal])

    in_batch_negatives_loss = None


pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)

WORLD = 2
ROWS = 5
ATOL = 1e-6


def _shard(rank, world_size, rows=ROWS):
    """The rows a sampler gives rank r: r, r + W, ... (rank 0: [0, 2, 4], rank 1: [1, 3]: uneven)."""
    return torch.arange(rank, rows, world_size)


GLOBAL_ORDER = torch.cat([_shard(r, WORLD) for r in range(WORLD)])  # [0, 2, 4, 1, 3]: what gather_rows returns


# float64: CoSENT's scale of 20 makes gradients of ~30, where float32's rounding alone (~4e-6) exceeds the 1e-6
# tolerance; in float64 the one-process and two-process sums agree to far below it.
DTYPE = torch.float64


def _model():
    """Linear(8, 4) from a fixed seed, the same in every process (without touching the caller's RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Linear(8, 4).to(DTYPE)


def _data():
    generator = torch.Generator().manual_seed(1)
    return {
        "x1": torch.randn(ROWS, 8, generator=generator, dtype=DTYPE),
        "x2": torch.randn(ROWS, 8, generator=generator, dtype=DTYPE),
        "scores": torch.tensor([0.1, 0.9, 0.4, 0.7, 0.2]),  # distinct: every pair of rows is ordered
        "x": torch.randn(ROWS, 8, generator=generator, dtype=DTYPE),
        "teacher": torch.randn(ROWS, 6, generator=generator, dtype=DTYPE),
        "negatives": torch.randn(ROWS, 8, generator=generator, dtype=DTYPE),
        # [flag, anchor, positive, negative] text ids: row 3's positive is row 0's text (masked as a false negative
        # for anchor 0), row 4 is not a pair (flag 0: neither anchor nor candidate).
        "ids": torch.tensor([[1, 0, 1, 2], [1, 3, 4, 5], [1, 6, 7, 8], [1, 9, 1, 10], [0, 11, 12, 13]]),
    }


# The steps below serve both sides: in one process gather_rows and scale_for_ddp are identities (the reference).


def _cosent_step(model, x1, x2, scores):
    a, b = model(torch.cat([x1, x2])).chunk(2)
    cosines = gather_rows(F.cosine_similarity(a, b))
    return cosent_loss(cosines, gather_rows(scores)), cosines


def _relational_step(model, x, teacher):
    student = gather_rows(model(x))
    return relational_distillation_loss(student, gather_rows(teacher)), student


def _contrastive_step(model, x1, x2, negatives, ids):
    """Symmetric in-batch negatives with one hard negative per row, over the gathered global batch."""
    output = gather_rows(torch.stack([model(x1), model(x2), model(negatives)], dim=1))
    return in_batch_negatives_loss(output, gather_rows(ids), 20.0, symmetric=True), output


# Matryoshka self-distillation: the prefixes' cosine matrices against the (detached) full embedding's. Loaded without
# a fallback: losses.py imports torch only, and a missing function must fail the test, not skip it.
prefix_self_distillation_loss = load_model_file("losses").prefix_self_distillation_loss


def _self_distillation_step(model, x):
    student = gather_rows(model(x))
    return prefix_self_distillation_loss(student, [(4, 1.0), (3, 1.0), (2, 2.0)]), student


def _gradients(model):
    return {"weight": model.weight.grad.detach().clone(), "bias": model.bias.grad.detach().clone()}


def _reference(loss_name, order=None):
    """One process, the whole batch (in `order`): the loss and the Linear's gradients."""
    data = {k: v if order is None else v[order] for k, v in _data().items()}
    model = _model()
    if loss_name == "cosent":
        loss, _ = _cosent_step(model, data["x1"], data["x2"], data["scores"])
    elif loss_name == "contrastive":
        loss, _ = _contrastive_step(model, data["x1"], data["x2"], data["negatives"], data["ids"])
    elif loss_name == "self_distillation":
        loss, _ = _self_distillation_step(model, data["x"])
    else:
        loss, _ = _relational_step(model, data["x"], data["teacher"])
    loss.backward()
    return loss.detach(), _gradients(model)


def _loopback_interface():
    """Gloo picks its interface from the host name unless told; keep it on loopback ("lo" on Linux, "lo0" on macOS)."""
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((name for name in names if name.startswith("lo")), "lo")


def _averaged_by_hand(model, world_size):
    """What DDP does to the gradients after backward: all_reduce(SUM) / W."""
    for parameter in model.parameters():
        dist.all_reduce(parameter.grad)
        parameter.grad /= world_size
    return _gradients(model)


def _rank_results(rank, world_size):
    """Everything one rank sends back, as plain tensors. The models and the DDP wrapper die on return, while the
    process group still lives: a DDP outliving destroy_process_group hung the rank's exit (torch 2.13, gloo) in most
    runs once transformers' modeling code had been imported."""
    rows = _shard(rank, world_size)
    data = {k: v[rows] for k, v in _data().items()}
    result = {}

    # CoSENT, with DDP's gradient averaging done by hand.
    model = _model()
    loss, cosines = _cosent_step(model, data["x1"], data["x2"], data["scores"])
    scale_for_ddp(loss).backward()
    grads = _averaged_by_hand(model, world_size)
    result["cosent"] = {"loss": loss.detach(), "grads": grads, "gathered": cosines.detach()}

    # Without scale_for_ddp the averaged gradient is 1/W of the true one: the reason the scaling exists.
    model = _model()
    loss, _ = _cosent_step(model, data["x1"], data["x2"], data["scores"])
    loss.backward()
    result["cosent_unscaled_grads"] = _averaged_by_hand(model, world_size)

    # Relational distillation through a real DistributedDataParallel, which averages the gradients itself.
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    loss, student = _relational_step(ddp, data["x"], data["teacher"])
    scale_for_ddp(loss).backward()
    result["relational"] = {"loss": loss.detach(), "grads": _gradients(model), "gathered": student.detach()}
    result["teacher"] = gather_rows(data["teacher"])

    # In-batch negatives from the global batch (anchors of one process against every process's candidates).
    if in_batch_negatives_loss is not None:
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss, output = _contrastive_step(ddp, data["x1"], data["x2"], data["negatives"], data["ids"])
        scale_for_ddp(loss).backward()
        result["contrastive"] = {"loss": loss.detach(), "grads": _gradients(model), "gathered": output.detach()}

    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    loss, student = _self_distillation_step(ddp, data["x"])
    scale_for_ddp(loss).backward()
    result["self_distillation"] = {"loss": loss.detach(), "grads": _gradients(model), "gathered": student.detach()}

    # gather_rows itself: rank order, uneven sizes, dtypes kept, gradient into the local rows only.
    result["indices"] = gather_rows(rows)
    result["mask"] = gather_rows(rows % 2 == 0)
    local = torch.full((len(rows), 3), float(rank + 1), requires_grad=True)
    weights = torch.arange(ROWS, dtype=torch.float32)[:, None]  # a distinct weight per global row
    (gather_rows(local) * weights).sum().backward()
    result["local_grad"] = local.grad
    result["empty"] = gather_rows(torch.zeros(0 if rank == 1 else 2, 3, dtype=torch.float64))  # rank 1: no rows
    return result


def _worker(rank, world_size, port, out_dir):
    os.environ["GLOO_SOCKET_IFNAME"] = _loopback_interface()
    torch.set_num_threads(1)  # two processes on a small CPU
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        assert world() == (world_size, rank)
        torch.save(_rank_results(rank, world_size), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # nobody tears the group down while the other still talks to it
    finally:
        dist.destroy_process_group()


def _free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' results from one 2-process gloo run (spawning twice would double the start-up time)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        _worker, args=(WORLD, _free_loopback_port(), str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    try:
        # join raises with the child's traceback if a rank fails; the timeout keeps a hung collective from hanging CI
        deadline = time.monotonic() + 90
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                raise TimeoutError("the 2-process gloo run did not finish in 90 s")
    except BaseException:
        for process in context.processes:
            if process.is_alive():
                process.kill()
        raise
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def _assert_grads_close(actual, expected):
    for name in ("weight", "bias"):
        torch.testing.assert_close(actual[name], expected[name], atol=ATOL, rtol=0)


@pytest.mark.parametrize("loss_name", ["cosent", "relational", "contrastive", "self_distillation"])
def test_global_batch_loss_and_gradients_match_one_process(ranks, loss_name):
    if loss_name == "contrastive" and in_batch_negatives_loss is None:
        pytest.skip("sentmtl's contrastive loss was not found")
    reference_loss, reference_grads = _reference(loss_name)
    permuted_loss, permuted_grads = _reference(loss_name, order=GLOBAL_ORDER)
    # Both losses ignore the order of the rows: the reference does not depend on how the ranks interleave them.
    torch.testing.assert_close(permuted_loss, reference_loss, atol=ATOL, rtol=0)
    _assert_grads_close(permuted_grads, reference_grads)
    for rank, result in enumerate(ranks):
        assert result[loss_name]["gathered"].shape[0] == ROWS, rank
        torch.testing.assert_close(result[loss_name]["loss"], reference_loss, atol=ATOL, rtol=0)
        _assert_grads_close(result[loss_name]["grads"], reference_grads)


def test_unscaled_gradient_would_be_averaged_away(ranks):
    _, reference_grads = _reference("cosent")
    for result in ranks:
        _assert_grads_close(result["cosent_unscaled_grads"], {k: v / WORLD for k, v in reference_grads.items()})


def test_gather_rows_concatenates_uneven_shares_in_rank_order(ranks):
    data = _data()
    model = _model()
    with torch.no_grad():
        a, b = model(torch.cat([data["x1"], data["x2"]])).chunk(2)
        cosines = F.cosine_similarity(a, b)
        student = model(data["x"])
    for rank, result in enumerate(ranks):
        assert result["indices"].dtype == torch.long
        assert result["indices"].tolist() == GLOBAL_ORDER.tolist() == [0, 2, 4, 1, 3]
        assert result["mask"].dtype == torch.bool
        assert result["mask"].tolist() == [True, True, True, False, False]
        torch.testing.assert_close(result["teacher"], data["teacher"][GLOBAL_ORDER], atol=0, rtol=0)
        assert result["relational"]["gathered"].shape == (ROWS, 4)
        torch.testing.assert_close(result["relational"]["gathered"], student[GLOBAL_ORDER], atol=ATOL, rtol=0)
        torch.testing.assert_close(result["cosent"]["gathered"], cosines[GLOBAL_ORDER], atol=ATOL, rtol=0)
        # The gradient reaches this rank's own rows only, each with its global row's weight.
        start = sum(len(_shard(r, WORLD)) for r in range(rank))  # rank 0: positions 0-2, rank 1: positions 3-4
        own_positions = torch.arange(start, start + len(_shard(rank, WORLD)), dtype=torch.float32)
        torch.testing.assert_close(result["local_grad"], own_positions[:, None].expand(-1, 3))
        # A rank with no rows at all still takes part and receives the others'.
        assert result["empty"].shape == (2, 3) and result["empty"].dtype == torch.float64
