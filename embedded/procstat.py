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
