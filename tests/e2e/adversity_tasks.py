"""Hostile and unlucky tasks for the end-to-end tests (loaded through config.toml)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from services.tasks import Backoff, Param, ParamType, task


@task("adv.crash", params=[Param("mode", ParamType.CHOICE, choices=("exit", "kill", "segv"))])
def crash(ctx, mode):
    """Take its own process down: os._exit, SIGKILL, or a segfault through ctypes."""
    ctx.progress(0.1, "about to crash")
    time.sleep(0.2)
    if mode == "exit":
        os._exit(1)
    elif mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        ctypes.string_at(0)
    return "survived"


def _start_child(ctx) -> None:
    child = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    ctx.output(f"pids {os.getpid()} {child.pid}")
    ctx.flush()


@task("adv.deaf", cancel_grace=1)
def deaf(ctx):
    """Start a program in a session of its own, then sleep with no checkpoint."""
    _start_child(ctx)
    time.sleep(3600)


@task("adv.in_c", cancel_grace=1)
def in_c(ctx):
    """Start a program, then block in a C call (no Python code runs, not even a handler)."""
    _start_child(ctx)
    ctypes.CDLL(None).sleep(3600)


@task("adv.flaky", retries=2, retry_on=(OSError,),
      backoff=Backoff(base=1.0, factor=2.0, maximum=10.0, jitter=0.25),
      params=[Param("marker", ParamType.STRING), Param("fails", ParamType.INTEGER)])
def flaky(ctx, marker, fails):
    """Fail with an OSError the first `fails` times (counted in the marker file)."""
    path = Path(marker)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < fails:
        raise OSError(f"not yet ({n})")
    return n


@task("adv.hog", memory_limit=64)
def hog(ctx):
    """Allocate far more than its limit."""
    return len(bytearray(1024 * 1024 * 1024))


@task("adv.later", retries=1, backoff=Backoff(base=4.0, jitter=0.0),
      params=[Param("marker", ParamType.STRING)])
def later(ctx, marker):
    """Fail the first time; the retry comes 4 s later."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("the first attempt always fails")
    return "second time lucky"
