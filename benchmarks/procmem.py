"""A process's memory as Linux reports it (/proc/<pid>/status), for the benchmarks that sample a run from outside
or from within: RssAnon is what the heap and the tensors hold (the mapped model files and libraries left out), the
figure the memory tables quote; VmRSS adds the mapped files."""

from pathlib import Path


def memory_bytes(pid: int | str = "self", fields: tuple[str, ...] = ("RssAnon",)) -> dict[str, int]:
    """`fields` of /proc/<pid>/status in bytes. OSError when the process is gone, or has exited and waits to be
    reaped (a zombie's status lists no memory); KeyError naming the fields the file lacks (a kernel without them)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == "State" and rest.split()[0] == "Z":
            raise ProcessLookupError(f"process {pid} has exited")
        if name in fields:
            values[name] = int(rest.split()[0]) * 1024  # the kernel writes kB
    missing = [name for name in fields if name not in values]
    if missing:
        raise KeyError(f"/proc/{pid}/status has no {', '.join(missing)} (Linux 4.5+ reports RssAnon)")
    return values
