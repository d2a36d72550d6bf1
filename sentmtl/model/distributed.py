"""Losses that compare the rows of a batch with each other, under DDP.

CoSENT ranks every pair of rows of the batch, relational distillation matches the batch's pairwise cosine matrix:
under DDP each process holds only its share of the global batch, so such a loss computed locally would change with
the process count. The rule: every loss sees the gathered *global* batch (for a per-row mean this also counts the
rows of a short share like any other, where DDP's average of per-process means would not),

    loss = scale_for_ddp(cosent_loss(gather_rows(cosines), gather_rows(scores)))

so one process with the whole batch and W processes with a share each give the same loss and the same gradients.

This file imports torch and the standard library only: it is copied beside saved model weights.
"""

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(process count, this process's rank); (1, 0) outside an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0 in rank order (the identity in one process).

    The processes may hold different numbers of rows (the last batch of an epoch split unevenly), so the sizes are
    gathered first and every share is padded to the largest: all_gather needs equal shapes. The gradient flows into
    this process's own rows only; `scale_for_ddp` makes up for the other processes' rows. Every process must call
    this the same number of times, in the same order, with the same trailing shape and dtype (it is a collective).
    """
    size, rank = world()
    if size == 1:
        return tensor
    # The sizes travel as a tensor on the data's device: nccl only moves CUDA tensors, gloo moves CPU ones.
    local_rows = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    all_rows = [torch.empty_like(local_rows) for _ in range(size)]
    dist.all_gather(all_rows, local_rows)
    rows = [int(n) for n in torch.cat(all_rows).tolist()]
    longest = max(rows)
    if longest == 0:  # nothing anywhere: the empty local tensor is already the (empty) global one
        return tensor
    padded = tensor.detach().contiguous()
    if padded.shape[0] < longest:
        padding = padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))
        padded = torch.cat([padded, padding])
    shares = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(shares, padded)
    # all_gather is not differentiable: the received shares are constants, and the local tensor itself goes in its
    # own slot so that autograd connects the result to this process's graph.
    shares = [share[:n] for share, n in zip(shares, rows)]
    shares[rank] = tensor
    return torch.cat(shares)


def scale_for_ddp(loss: torch.Tensor) -> torch.Tensor:
    """The same value, its gradient multiplied by the process count (the identity in one process).

    Every process computes the same global-batch loss L but backpropagates into its own rows only, so the true
    gradient of L is the SUM of the processes' gradients; DDP AVERAGES them. W times each process's gradient makes
    the average the sum. The value stays L (the added term is zero), so the logged loss is right.
    """
    size, _ = world()
    if size == 1:
        return loss
    return loss + (size - 1) * (loss - loss.detach())
