"""What the trainer and the callbacks share about running under wrappers and several processes: the model under its
DDP / compile wrappers (`unwrap`), and a decision every process takes together (`all_processes_agree`)."""

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def all_processes_agree(flag: torch.Tensor | bool, device=None) -> bool:
    """`flag` (a boolean, or a boolean scalar tensor) on this process AND on every other one. Under several processes
    each must take the same decision at the same step, or the ones that go on wait forever for the ones that
    stopped. In one process this is `bool(flag)`: no tensor is made for a plain bool."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.as_tensor(flag, device=device if not isinstance(flag, torch.Tensor) else flag.device)
        flag = flag.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag)
