"""Handing freed memory back to the system.

Freed memory does not leave a process by itself: glibc's heap keeps freed blocks for reuse (and a long run's
tensors of ever-different sizes fragment it, so they are seldom reused whole), Arrow's pool likewise. Measured on a
5M-row streamed run (benchmarks/scale.py's memory timeline): resident anonymous memory climbed from 1.6 to 2.1 GB
over 2,000 steps; trimmed every 10 steps, the run's floor and peak came down (peak 2.19 -> 2.03 GB) but a slower
growth remained (compiled CPU kernels kept per batch shape: `sentmtl.data.batching.STREAM_PAD_MULTIPLE`).
"""

import ctypes
import gc

import pyarrow

# Every this many training steps the heap is trimmed (`ReleaseMemoryCallback`). Measured on the streamed run
# (700 steps, 2 CPU cores): every 10 steps peaked at 1.82 GB against 1.99 untrimmed, its step time (0.340 s) within
# the runs' noise (0.318-0.340 s for settings that should cost nothing); every step, 1.74 GB but 0.379 s a step
# (released pages fault back in).
RELEASE_EVERY_STEPS = 10


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory(collect: bool = True) -> None:
    """Return the freed parts of Arrow's memory pool and glibc's heap to the system. `collect`: run Python's cycle
    collector first (a one-off after data preparation; too slow to do every few steps)."""
    if collect:
        gc.collect()
    pyarrow.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


__all__ = ["RELEASE_EVERY_STEPS", "release_memory"]
