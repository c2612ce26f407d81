"""The one Huey instance: the transport that carries "run attempt of task X" messages.

Huey is not the source of truth (the ledger is): a message only names a task id. The worker
takes messages with `dequeue()` when woken instead of running Huey's polling consumer,
whose idle back-off reaches 10 s.
"""

from __future__ import annotations

import sqlite3

from huey import SqliteHuey
from huey.storage import SqliteStorage

from services.layout import DataLayout

QUEUE_NAME = "herald"


class _Storage(SqliteStorage):
    """Huey's SQLite storage with synchronous=NORMAL: WAL commits without an fsync each.

    A message lost to a power cut is not a lost task: the worker re-enqueues every queued
    task of the ledger that the queue no longer holds when it starts.
    """

    checkpoint_pages = 10_000  # see services.store.sqlite.SAFETY_CHECKPOINT_PAGES

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        conn.execute(f"pragma wal_autocheckpoint={int(self.checkpoint_pages)}")
        return conn


class _Huey(SqliteHuey):
    storage_class = _Storage


def _run(task_id: str) -> None:
    """Placeholder body: the worker runs attempts itself (see services.worker.runner)."""
    raise RuntimeError("attempts are run by Herald's worker, not by a Huey consumer")


class TaskQueue:
    """Enqueue and dequeue task ids through Huey on SQLite."""

    def __init__(self, layout: DataLayout, *, checkpoint_pages: int | None = None) -> None:
        self.huey = _Huey(QUEUE_NAME, filename=str(layout.queue_db), results=False, utc=True)
        if checkpoint_pages is not None:
            self.huey.storage.checkpoint_pages = checkpoint_pages
        self._run = self.huey.task(name="herald.run")(_run)

    def enqueue(self, task_id: str) -> None:
        self.huey.enqueue(self._run.s(task_id))

    def dequeue(self) -> str | None:
        """The next task id, or None; Huey deletes the message as it hands it out."""
        task = self.huey.dequeue()
        return str(task.args[0]) if task is not None else None

    def checkpoint(self) -> None:
        """Copy the queue's WAL into its database (see TaskStore.checkpoint)."""
        self.huey.storage.sql("pragma wal_checkpoint(PASSIVE)")

    def pending_ids(self) -> set[str]:
        """Task ids waiting in the queue."""
        return {str(t.args[0]) for t in self.huey.pending()}

    def __len__(self) -> int:
        return int(self.huey.pending_count())
