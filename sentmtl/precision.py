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
    """True where bf16 autocast on `device_type` (default: `default_device()`) is faster than fp32 without loss:
    CUDA GPUs with native bf16 (compute capability 8.0+), CPUs with AVX-512 BF16 / AMX.

    GPUs before Ampere and CPUs without those instructions only emulate bf16, which is slower than fp32; torch's
    `is_bf16_supported()` counts emulation as support by default, so it is asked without it.
    """
    device_type = device_type or default_device().type
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
