"""What a process costs, read from /proc (Linux): for the benchmarks and the smoke tests."""

from __future__ import annotations

import contextlib
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process's live threads, from schedstat (nanoseconds,
    unlike /proc/PID/stat's ticks). The services' threads live as long as they do."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(path.read_text().split()[0])
    return total / 1e9


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """The live child processes of a process."""
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in path.read_text().split())
    return found


def _reaped_children_seconds(pid: int) -> float:
    """CPU seconds of a process's children that have ended and were waited for (stat's
    cutime + cstime, in clock ticks)."""
    import os

    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2:].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of every child it ever had: the live ones (precise) and
    the ones it reaped (in clock ticks). The difference of two readings is what the whole
    tree used in between, even when children came and went (the worker's executors)."""
    total = cpu_seconds(pid) + _reaped_children_seconds(pid)
    for child in children(pid):
        total += tree_cpu_seconds(child)
    return total


def pss_mb(pid: int) -> float:
    """Proportional memory of a process (shared pages split among their users), in MB."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    return rss_mb(pid)
