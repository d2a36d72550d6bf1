"""Which device runs, and which precision is fast on it: bf16 autocast where the hardware has it, fp32 elsewhere."""

import functools
from pathlib import Path

import torch


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def default_device() -> torch.device:
    """The device a model should run on when the user names none: the GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache  # read once per process and device type: encode() asks for every chunk of a streamed file
def fast_bf16_available(device_type: str | None = None) -> bool:
    """Whether `auto` precision picks bf16 autocast on `device_type` (default: `default_device()`): where it was
    measured faster than fp32 for the bundled encoder, which is only on CPUs with native bf16 (AVX-512 BF16 / AMX:
    training 2.45×, embedding 2.21×; benchmarks/speed.py). CPUs without those instructions emulate bf16, slower.

    Not on CUDA GPUs, even with native bf16: on an H100 (results/gpu/h100) bf16 autocast ran the default training at
    0.56× fp32's samples/s and embedding at 0.8×. A 6-layer encoder at batch 16 is bound by kernel launches there,
    and autocast adds a cast kernel per weight per step. `--bf16 true` / `precision="bf16"` remain for larger encoders
    and batches, where the GPU's bf16 throughput can pay for that.
    """
    device_type = device_type or default_device().type
    if device_type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
