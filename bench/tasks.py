"""Tasks only the benchmark uses (loaded through the bench's own config.toml)."""

from __future__ import annotations

import time

from services.tasks import task

GRACE = 1.0


@task("bench.deaf", cancel_grace=GRACE, title="Ignores cancels")
def deaf(ctx):
    """Sleep with no checkpoint: a cancel must kill it."""
    ctx.progress(0.0, "sleeping")
    ctx.flush()
    time.sleep(3600)
