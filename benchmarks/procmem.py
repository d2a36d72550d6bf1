"""A process's memory as Linux reports it (/proc/<pid>/status), for the benchmarks that sample a run from outside
or from within: RssAnon is what the heap and the tensors hold (the mapped model files and libraries left out), the
figure the memory tables quote; VmRSS adds the mapped files."""

from pathlib import Path


def memory_bytes(pid: int | str = "self", fields: tuple[str, ...] = ("RssAnon",)) -> dict[str, int]:
    """`fields` of /proc/<pid>/status in bytes (`parse_status`); OSError when the process is gone."""
    return parse_status(Path(f"/proc/{pid}/status").read_text(), pid, fields)


def parse_status(text: str, pid, fields: tuple[str, ...]) -> dict[str, int]:
    """`fields` of a /proc/<pid>/status text in bytes. ProcessLookupError (an OSError) for a process that is exiting:
    a zombie, or one whose memory is already released while its state still reads running (its status then lists no
    memory lines at all, for a few hundred ms after a large exit). KeyError naming the fields missing from a status
    that lists memory (a kernel without them)."""
    values, state, has_memory = {}, None, False
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "State":
            state = rest.split()[0]
        has_memory |= name == "VmRSS"
        if name in fields:
            values[name] = int(rest.split()[0]) * 1024  # the kernel writes kB
    if state in ("Z", "X") or not has_memory:
        raise ProcessLookupError(f"process {pid} is exiting (state {state}, no memory lines)")
    missing = [name for name in fields if name not in values]
    if missing:
        raise KeyError(f"/proc/{pid}/status has no {', '.join(missing)} (Linux 4.5+ reports RssAnon)")
    return values
