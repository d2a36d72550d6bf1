"""Which precision is fast here: bf16 autocast where the hardware has it, fp32 elsewhere."""

import functools
from pathlib import Path

import torch


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


@functools.cache  # read once per process: encode() asks for every chunk of a streamed file
def fast_bf16_available() -> bool:
    """True where bf16 autocast is faster than fp32 without loss: CUDA GPUs with bf16, CPUs with AVX-512 BF16 / AMX.

    (CPUs without those instructions emulate bf16, which is slower than fp32.)
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if has_accelerator():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
