"""The demo task of the original pattern: wait a while, then answer 42."""

from __future__ import annotations

import time

from services.tasks.catalog import Param, ParamType, task
from services.tasks.context import TaskContext

STEP = 0.1  # seconds between progress reports


@task(
    "demo.answer",
    title="The answer",
    description=(
        "Waits the given number of seconds, reporting progress about ten times a second, "
        "then returns 42. With 0 seconds it answers at once (used to measure latency)."
    ),
    params=[
        Param("seconds", ParamType.NUMBER, title="Seconds", default=5, minimum=0,
              maximum=3600, description="How long to think before answering."),  # fmt: skip
    ],
)
def answer(ctx: TaskContext, seconds: float = 5) -> int:
    """Wait `seconds` in small interruptible steps, then return 42."""
    if seconds <= 0:
        return 42
    start = time.monotonic()
    deadline = start + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ctx.progress((seconds - remaining) / seconds, f"{remaining:.1f} s left")
        ctx.sleep(min(STEP, remaining))
    ctx.progress(1.0, "42")
    return 42
