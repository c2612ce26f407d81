"""The worker service as a process: it announces readiness with its executors, and stops
cleanly however many ways it is told to at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.runtime import parse_ready


def start(data: Path) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen([sys.executable, "-m", "services.worker", "--data-dir", str(data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HERALD_LOG_LEVEL": "WARNING"})  # fmt: skip
    assert proc.stdout is not None
    info = parse_ready(proc.stdout.readline())
    assert info is not None and info["service"] == "worker"
    return proc, info


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("round_", range(3))
def test_signals_and_end_of_stdin_together_stop_it(tmp_path, round_):
    """SIGTERM handlers that took the stop event's lock deadlocked when a second signal
    (or the stdin watcher) came while the first was inside it: the worker lived on."""
    proc, info = start(tmp_path / "data")
    executors = info["executors"]
    assert len(executors) == info["concurrency"] == 4
    assert proc.stdin is not None
    for i in range(20):  # a burst: each may land while the previous one is handled
        proc.send_signal(signal.SIGTERM if i % 2 else signal.SIGINT)
        if i == 10:
            proc.stdin.close()
    assert proc.wait(timeout=15) == 0
    assert proc.stdout is not None
    proc.stdout.close()
    deadline = time.monotonic() + 5
    while not all(gone(p) for p in executors):
        assert time.monotonic() < deadline, executors
        time.sleep(0.02)


def mapped_libraries(pid: int) -> set[str]:
    """The file names of the shared objects a live process has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_the_dispatcher_and_its_executors_do_not_load_asyncio(tmp_path):
    """Nothing in the worker runs an event loop: the store it shares with the web and the
    notifier must not pull asyncio (and the ssl it loads) into it, nor into the executors
    it forks (a task that wants asyncio imports it, as in any Python)."""
    proc, info = start(tmp_path / "data")
    try:
        for pid in [proc.pid, *info["executors"]]:
            loaded = mapped_libraries(pid)
            assert not [lib for lib in loaded if lib.startswith(("_asyncio", "libssl"))], loaded
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None
        proc.stdout.close()
