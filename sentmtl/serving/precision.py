"""Which device runs, and which precision is fast on it: bf16 autocast where it was measured faster, fp32 elsewhere.

On a CPU, `auto` precision no longer trusts the instruction set alone: a CPU with AVX-512 BF16 but no AMX ran a
1024³ matmul on one thread at 77.5 GFLOP/s in fp32 and 36.5 in bf16 (sentmtl.encode 130 against 66 sentences/s),
while others with the same flags run the default training 2.45× and embedding 2.21× faster in bf16. So on a CPU
with native bf16, the first `auto` of a process runs a short probe (`time_probe`, well under a second) and picks
bf16 only where it beats fp32 by `BF16_MARGIN`; the verdict is cached on disk per machine, torch version and thread
count (`probe_cache_dir`), so later processes read it instead of probing again.
"""

import functools
import hashlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Native bf16 on x86 CPUs (/proc/cpuinfo flags). Without one of these torch emulates bf16 with fp32 arithmetic plus
# conversions, which is always slower than fp32: no probe is run there.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags that change the answer on a CPU that has native bf16 (AMX tiles run bf16 matmuls on their own units): part
# of the cache key, beside the model name.
KEY_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512f")
# bf16 must beat fp32 by this factor on the probe to be chosen. The probe is matmuls only, where bf16 gains most;
# in the encoder, autocast also casts every weight each step and runs layer norms, softmax and GELU that bf16
# speeds up less, so a probe that is barely faster is a model that is no faster. The margin also stays above the
# few percent that two timings on a shared machine differ by, so a tie is never read as a win, and bf16 (cosine
# ~0.9999 to fp32) is only paid for with a clear gain.
BF16_MARGIN = 1.15
# SENTMTL_CPU_BF16=1 / 0: `auto` picks bf16 / fp32 on the CPU without probing (CI, or a user who measured).
ENV_OVERRIDE = "SENTMTL_CPU_BF16"
PROBE_FORMAT = 1  # bump when the probe's workload or the verdict's rule changes: older cached verdicts then miss
# The probe: one feed-forward projection of the bundled encoder (hidden 384 → 1536) over 256 tokens, forward and
# backward (input and weight gradients), as training runs it; embedding runs the forward alone.
PROBE_SHAPE = (256, 384, 1536)
PROBE_WARMUP = 1  # untimed steps per precision: thread pool start-up, oneDNN kernel selection, allocator
PROBE_REPEATS = 5  # timed steps per precision, interleaved; the median counts
PROBE_BUDGET_S = 0.4  # stop repeating after this long (at least 3 repeats), so a slow CPU is not held long


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def default_device() -> torch.device:
    """The device a model should run on when the user names none: the GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache  # decided once per process and device type: encode() asks for every chunk of a streamed file
def fast_bf16_available(device_type: str | None = None) -> bool:
    """Whether `auto` precision picks bf16 autocast on `device_type` (default: `default_device()`).

    On a CPU: only where bf16 was measured faster on this machine. A CPU without native bf16 (AVX-512 BF16 / AMX)
    emulates it, slower, and gets fp32 without a probe; one with it gets bf16 only if `time_probe` runs bf16
    autocast at least `BF16_MARGIN` times as fast as fp32, at this process's thread count. The verdict is cached
    on disk (`probe_cache_dir`) per CPU model, flags, torch version and thread count. `SENTMTL_CPU_BF16=1` / `0`
    decides without probing. `--bf16` / `precision=` still force either.

    Not on CUDA GPUs, even with native bf16: on an H100 (results/gpu/h100) bf16 autocast ran the default training at
    0.56× fp32's samples/s and embedding at 0.8×. A 6-layer encoder at batch 16 is bound by kernel launches there,
    and autocast adds a cast kernel per weight per step. `--bf16 true` / `precision="bf16"` remain for larger encoders
    and batches, where the GPU's bf16 throughput can pay for that. Nor on MPS.
    """
    device_type = device_type or default_device().type
    if device_type != "cpu":
        return False
    use, why = cpu_bf16_verdict()
    logger.info("`auto` precision on the CPU: %s (%s).", "bf16" if use else "fp32", why)
    return use


def cpu_bf16_verdict() -> tuple[bool, str]:
    """Whether bf16 autocast is the fast path on this CPU, and why (for the log): see `fast_bf16_available`."""
    override = os.environ.get(ENV_OVERRIDE, "").strip().lower()
    if override in ("1", "true", "yes", "on"):
        return True, f"{ENV_OVERRIDE}={override}"
    if override in ("0", "false", "no", "off"):
        return False, f"{ENV_OVERRIDE}={override}"
    if override not in ("", "auto"):
        logger.warning("%s=%r is not 0, 1 or auto: ignored, bf16 is measured.", ENV_OVERRIDE, override)
    cpuinfo = _read_cpuinfo()
    flags = _cpu_flags(cpuinfo)
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if not native:
        return False, "no native bf16 on this CPU (no AVX-512 BF16 / AMX): emulated bf16 is slower than fp32"
    threads = torch.get_num_threads()
    key = {
        "format": PROBE_FORMAT,
        "cpu": _cpu_model(cpuinfo),
        "flags": sorted(flag for flag in KEY_FLAGS if flag in flags),
        "torch": str(torch.__version__),
        "threads": threads,
    }
    path = _cache_path(key)
    cached = _read_cached(path, key) if path is not None else None
    where = "cached" if cached is not None else "measured now"
    if cached is None:
        try:
            cached = {"key": key, **time_probe()}
        except RuntimeError as error:  # a torch build without bf16 CPU kernels: fp32, and nothing to cache
            return False, f"{', '.join(native)}, but bf16 autocast failed on the probe ({error})"
    fp32_s, bf16_s = cached["fp32_s"], cached["bf16_s"]
    speedup = fp32_s / bf16_s if bf16_s > 0 else 0.0
    use = speedup >= BF16_MARGIN
    if where == "measured now" and path is not None:
        _write_cached(path, {**cached, "speedup": round(speedup, 3), "margin": BF16_MARGIN, "bf16": use})
    m, k, n = PROBE_SHAPE
    why = (
        f"{', '.join(native)}; bf16 autocast ran a [{m}, {k}] @ [{k}, {n}] forward + backward {speedup:.2f}× as fast "
        f"as fp32 ({bf16_s * 1e3:.1f} vs {fp32_s * 1e3:.1f} ms) on {threads} thread(s), "
        f"{'at least' if use else 'under'} the {BF16_MARGIN}× needed; {where}"
        + (f" ({path})" if path is not None else ", not cached")
    )
    return use, why


def time_probe() -> dict:
    """Median seconds of one probe step in fp32 (`fp32_s`) and under bf16 autocast (`bf16_s`), at the process's
    thread count: `PROBE_WARMUP` untimed steps each, then up to `PROBE_REPEATS` timed ones, interleaved with the
    order alternating, so a change in the machine's load hits both. Leaves the global RNG and autograd mode as they
    were. Tests replace this function (monkeypatch `sentmtl.serving.precision.time_probe`)."""
    m, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.randn(m, k, generator=generator, requires_grad=True)
        weight = torch.randn(n, k, generator=generator, requires_grad=True)
        grad_out = torch.randn(m, n, generator=generator)

        def step(bf16: bool) -> float:
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = torch.nn.functional.linear(x, weight)
            torch.autograd.grad(out, (x, weight), grad_out.to(out.dtype))
            return time.perf_counter() - started

        for _ in range(PROBE_WARMUP):
            step(False), step(True)
        times = {False: [], True: []}
        started = time.perf_counter()
        for repeat in range(PROBE_REPEATS):
            for bf16 in (False, True) if repeat % 2 == 0 else (True, False):
                times[bf16].append(step(bf16))
            if repeat >= 2 and time.perf_counter() - started > PROBE_BUDGET_S:
                break
    return {
        "fp32_s": statistics.median(times[False]),
        "bf16_s": statistics.median(times[True]),
        "repeats": len(times[False]),
    }


def probe_cache_dir() -> Path:
    """Where probe verdicts are kept: beside the teacher-vector cache (`teacher_cache.default_cache_dir`), under the
    datasets cache: `HF_DATASETS_CACHE`, else `HF_HOME/datasets`, else `~/.cache/huggingface/datasets`."""
    datasets = sys.modules.get("datasets")
    if datasets is not None:  # already imported (a training run): its setting, which code may have changed
        return Path(datasets.config.HF_DATASETS_CACHE) / "sentmtl_cpu_bf16"
    # Not imported (encode alone): the same rule as datasets.config, without the second it takes to import.
    hf_home = os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    root = os.getenv("HF_DATASETS_CACHE", os.path.join(os.path.expanduser(hf_home), "datasets"))
    return Path(root) / "sentmtl_cpu_bf16"


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return "unknown"


def _cache_path(key: dict) -> Path | None:
    try:
        directory = probe_cache_dir()
    except Exception as error:  # no datasets cache to be found: probe each process
        logger.debug("No cache for the bf16 probe: %s", error)
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"{digest}.json"


def _read_cached(path: Path, key: dict) -> dict | None:
    """The cached probe for `key`, or None: missing, unreadable, corrupt or another key's (it is then rewritten)."""
    try:
        record = json.loads(path.read_text())
        if record["key"] != key:
            return None
        fp32_s, bf16_s = float(record["fp32_s"]), float(record["bf16_s"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.info("Ignoring the unreadable bf16 probe cache %s (%s): measuring again.", path, error)
        return None
    if not (fp32_s > 0 and bf16_s > 0):
        return None
    return {**record, "fp32_s": fp32_s, "bf16_s": bf16_s}


def _write_cached(path: Path, record: dict) -> None:
    """Written under a temporary name and renamed: a reader sees the whole file or none. An unwritable folder only
    means the next process probes too."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.stem}.", delete=False) as handle:
            temporary = handle.name
            json.dump(record, handle, indent=1)
        os.replace(temporary, path)
    except OSError as error:
        logger.info("Could not cache the bf16 probe in %s (%s): each process will measure again.", path.parent, error)
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
