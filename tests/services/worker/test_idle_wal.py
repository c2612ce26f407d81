"""The first write after idle: the worker's housekeeping starts both WALs over once it has
checkpointed them, so the next commit (the web's, on its event loop) only appends, without
writing and fsyncing a new WAL header. Counted by the WAL header's salt, which SQLite
changes each time it starts the file over; never timed."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from services.core.states import TaskState
from services.queue import TaskQueue
from services.store import TaskStore
from tests.services.worker.test_dispatcher import harness  # noqa: F401 (a fixture)


def restarts(db: Path) -> int:
    """The WAL header's salt-1: SQLite adds one each time it starts the WAL over."""
    with open(f"{db}-wal", "rb") as f:
        return struct.unpack(">I", f.read(20)[16:20])[0]


def wait_for_change(db: Path, since: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (now := restarts(db)) == since:
        assert time.monotonic() < deadline, f"{db.name}: the WAL was not started over"
        time.sleep(0.02)
    return now


def test_after_the_checkpoint_the_next_commit_appends_to_a_wal_already_started_over(
        harness, tmp_path):  # noqa: F811  # fmt: skip
    task_id = harness.submit("t.ok")
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    ledger, queue_db = harness.layout.ledger_db, harness.queue.path
    before = {db: restarts(db) for db in (ledger, queue_db)}
    # The checkpointer's pass a second after the writes (an upper bound, not a measure).
    started_over = {db: wait_for_change(db, n) for db, n in before.items()}
    web_store, web_queue = TaskStore(ledger), TaskQueue(harness.layout)
    try:  # what the web service does for the next task after idle
        rec, _ = web_store.create_task(principal="a", name="t.ok", args={}, max_attempts=1,
                                       max_lost=3, timeout=None)  # fmt: skip
        web_queue.enqueue(rec.id)
        assert {db: restarts(db) for db in (ledger, queue_db)} == started_over
    finally:
        web_store.close()
