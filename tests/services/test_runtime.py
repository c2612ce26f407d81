"""What every service process shares (services.runtime), in real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.runtime import parse_ready

REPO = Path(__file__).resolve().parents[2]

ANNOUNCE = """
import gc, sys
from services.runtime import announce_ready

def on_gc(phase, info):
    if phase == "start" and info["generation"] == 2:
        sys.stdout.write("FULL COLLECTION\\n")

garbage = []
garbage.append(garbage)  # a cycle: start-up leaves some
del garbage
gc.callbacks.append(on_gc)
announce_ready("example", port=1)
gc.callbacks.remove(on_gc)
print("FROZEN", gc.get_freeze_count())
"""


def run(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=30, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_ready_is_announced_then_what_start_up_made_is_frozen_without_a_collection():
    """What start-up made is frozen after the readiness line, without a full collection
    (8-18 ms of a service's CPU as its first request comes, for next to nothing freed)."""
    lines = run(ANNOUNCE)
    assert parse_ready(lines[0]) == {"service": "example", "port": 1}
    assert lines[1].startswith("FROZEN")  # no "FULL COLLECTION" line before it
    frozen = int(lines[1].split()[1])
    assert frozen > 1000  # the modules and everything else start-up made
