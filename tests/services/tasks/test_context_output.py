"""Output a task holds back to group lines is sent at its next checkpoint once
`progress_interval` passed, not only with the next line: a program that prints one line
and goes quiet (`process.run` looks at `ctx.cancelled` every 0.2 s) shows it while it runs."""

from __future__ import annotations

import sys
import threading
import time

from services.tasks.builtin.process import run
from services.tasks.context import TaskContext


def test_a_held_line_is_sent_at_the_next_look_at_cancelled():
    ctx = TaskContext(progress_interval=0.05)
    ctx.progress(None, "started")  # recorded: the interval starts again
    ctx.output("ready")  # within the interval: held back
    assert ctx.reports == [("progress", (None, "started"))]
    time.sleep(0.1)
    assert not ctx.cancelled
    assert ctx.reports[-1] == ("output", ["ready"])


def test_a_quiet_program_shows_its_line_while_it_runs(tmp_path):
    go = tmp_path / "go"
    # Two lines at once: the first may be sent at once, the second is held with it or after.
    script = (f"import os, time\nprint('start', flush=True)\nprint('ready', flush=True)\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n")  # fmt: skip
    ctx = TaskContext(progress_interval=0.1)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        run(ctx, sys.executable, ["-c", script], str(tmp_path))))  # fmt: skip
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while "ready" not in sent(ctx) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sent(ctx) == ["start", "ready"]  # before the program ended
        assert worker.is_alive()
    finally:
        go.touch()
        worker.join(20)
    assert result["lines"] == 2


def sent(ctx: TaskContext) -> list[str]:
    return [line for kind, lines in list(ctx.reports) if kind == "output" for line in lines]
