"""benchmarks/procmem.py: a process's memory read from /proc, in bytes."""

import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import procmem  # noqa: E402


def test_anonymous_memory_follows_what_a_process_holds():
    grow = (
        "import sys, time; b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096]); print('ok'); time.sleep(30)"
    )
    small = subprocess.Popen([sys.executable, "-c", grow.replace("300_000_000", "1")], stdout=subprocess.PIPE)
    large = subprocess.Popen([sys.executable, "-c", grow], stdout=subprocess.PIPE)
    try:
        small.stdout.readline(), large.stdout.readline()  # both hold their buffer
        held = {p: procmem.memory_bytes(p.pid, ("RssAnon", "VmRSS")) for p in (small, large)}
        assert held[large]["RssAnon"] - held[small]["RssAnon"] > 250_000_000
        assert all(m["VmRSS"] >= m["RssAnon"] for m in held.values())  # VmRSS adds the mapped files
    finally:
        small.kill(), large.kill()
        small.wait(), large.wait()
    with pytest.raises(OSError):  # gone
        procmem.memory_bytes(large.pid)


def test_a_field_the_status_lacks_is_named():
    with pytest.raises(KeyError, match="has no NoSuchField"):
        procmem.memory_bytes("self", ("RssAnon", "NoSuchField"))


def test_an_exited_process_not_yet_reaped_is_gone():
    """A sampler polls a run it has not reaped yet: the zombie's status has no memory lines, which must not read as a
    kernel without RssAnon."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    state = ""
    for _ in range(200):  # until it has exited (not reaped: no wait() yet)
        state = next(line for line in open(f"/proc/{process.pid}/status") if line.startswith("State:"))
        if "Z" in state.split()[1]:
            break
        time.sleep(0.05)
    assert "Z" in state
    with pytest.raises(ProcessLookupError, match="is exiting"):
        procmem.memory_bytes(process.pid)
    process.wait()


def test_a_process_whose_memory_is_released_but_still_running_is_exiting():
    """After a large exit the kernel drops the memory lines while the state still reads R, for about as long as a
    sampler's interval: that is a process going away, not a kernel without RssAnon."""
    exiting = "Name:\tpython\nState:\tR (running)\nPid:\t7\nThreads:\t1\n"
    with pytest.raises(ProcessLookupError, match="process 7 is exiting"):
        procmem.parse_status(exiting, 7, ("RssAnon",))
    running = "State:\tS (sleeping)\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\n"
    assert procmem.parse_status(running, 7, ("RssAnon", "VmRSS")) == {"RssAnon": 1024 * 1024, "VmRSS": 2048 * 1024}
    with pytest.raises(KeyError, match="has no RssFile"):
        procmem.parse_status(running, 7, ("RssFile",))
