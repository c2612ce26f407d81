"""The one Huey instance: the transport that carries "run attempt of task X" messages.

Huey is not the source of truth (the ledger is): a message only names a task id. The worker
takes messages with `dequeue()` when woken instead of running Huey's polling consumer,
whose idle back-off reaches 10 s.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import sqlite3
import sys
from collections.abc import Callable, Iterator
from typing import Any

from services.layout import DataLayout
from services.store.sqlite import (
    JOURNAL_SIZE_LIMIT,
    WRITE_STATS,
    _busy,
    restart_wal,
    retry_busy,
    wal_checkpoint,
)


def _import_huey_without_redis() -> None:
    """Import huey without redis-py where the process has not imported it already.

    huey.storage imports redis-py whenever it is installed (for RedisHuey), and redis-py
    imports its asyncio client and `ssl` with it: ~140 ms of CPU here at every start of
    the web and the worker on the SQLite backend, which never uses it (and inside the
    web's no-OpenSSL window, services.notls, its import fails outright). A `None` in
    sys.modules makes huey take the "not installed" path; `huey_redis()` puts redis-py in
    afterwards for a process that uses the Redis backend.
    """
    if "huey.storage" in sys.modules or "redis" in sys.modules:
        return
    hidden = {name: sys.modules.get(name) for name in ("redis", "redis.exceptions")}
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import huey.storage  # noqa: F401
    finally:
        for name, module in hidden.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def huey_redis() -> None:
    """Give huey's Redis storage the redis-py it did not import (see
    `_import_huey_without_redis`): for the Redis backend's queue (services.queue_redis)."""
    import huey.storage as storage
    import redis
    import redis.exceptions

    if storage.Redis is None:
        storage.ConnectionPool = redis.ConnectionPool
        storage.Redis = redis.Redis
        storage.ConnectionError = redis.exceptions.ConnectionError
        storage.TimeoutError = redis.exceptions.TimeoutError
        # (bound as a class attribute when the module was read: `redis_client = Redis`)
        storage.RedisStorage.redis_client = redis.Redis


_import_huey_without_redis()

from huey import SqliteHuey  # noqa: E402
from huey.exceptions import HueyException  # noqa: E402
from huey.storage import SqliteStorage  # noqa: E402

log = logging.getLogger(__name__)

QUEUE_NAME = "herald"


# What reading a message that something else wrote may raise (Huey's deserializer).
UNREADABLE = (HueyException, ValueError, TypeError, EOFError, pickle.UnpicklingError,
              AttributeError, ImportError)  # fmt: skip


def next_task_id(dequeue: Callable[[], Any], logger: logging.Logger = log) -> str | None:
    """The task id of the next message `dequeue()` (a Huey's) hands out, or None when it
    hands out none. A message that cannot be read, or names no task, is logged and
    skipped: the ledger still has its task queued, and the worker's recovery enqueues it
    again (on `logger`: the queue's own). Every storage's queue reads its messages
    through this."""
    while True:
        try:
            task = dequeue()
        except UNREADABLE as exc:
            logger.error("skipped a queue message that cannot be read: %s", exc)
            continue
        if task is None:
            return None
        try:
            return str(task.args[0])
        except (AttributeError, IndexError, TypeError):
            logger.error("skipped a queue message without a task id: %r", task)


class QueueBusy(Exception):
    """The queue's write lock is held by another connection (`TaskQueue.try_enqueue`)."""


class _Storage(SqliteStorage):
    """Huey's SQLite storage with synchronous=NORMAL (WAL commits without an fsync each)
    and the store's fine-grained wait for the write lock instead of SQLite's busy handler,
    which sleeps at least a millisecond (on the web service's event loop, at that).

    A message lost to a power cut is not a lost task: the worker re-enqueues every queued
    task of the ledger that the queue no longer holds when it starts.
    """

    checkpoint_pages = 10_000  # see services.store.sqlite.SAFETY_CHECKPOINT_PAGES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["timeout"] = 0  # no busy handler: `db` waits for the lock itself
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        conn.execute(f"pragma wal_autocheckpoint={int(self.checkpoint_pages)}")
        conn.execute(f"pragma journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return conn

    def _set_journal_mode(self, conn: sqlite3.Connection) -> None:
        retry_busy(lambda: conn.execute(f'pragma journal_mode="{self._journal_mode}"'))

    @contextlib.contextmanager
    def db(self, commit: bool = False, close: bool = False, *,
           wait: bool = True) -> Iterator[sqlite3.Cursor]:  # fmt: skip
        # Huey's own, with the lock taken by retry_busy, and a failed commit undone. Without
        # `wait`, a lock another connection holds raises `QueueBusy` at once instead.
        with self.lock:
            conn = self.conn
            cursor = conn.cursor()
            try:
                if commit:
                    if wait:
                        retry_busy(lambda: cursor.execute(self.begin_sql))
                    else:
                        try:
                            cursor.execute(self.begin_sql)
                        except sqlite3.OperationalError as exc:
                            if _busy(exc):
                                raise QueueBusy from None
                            raise
                    WRITE_STATS.queue_transactions += 1
                yield cursor
            except Exception:
                if commit:
                    conn.rollback()
                raise
            else:
                if commit:
                    try:
                        conn.commit()
                    except Exception:
                        # A commit the disk refused (full) can leave the transaction open,
                        # holding the write lock against every other service.
                        if conn.in_transaction:
                            conn.rollback()
                        raise
            finally:
                cursor.close()
                if close:
                    conn.close()
                    self._conn = None

    def sql(self, query: str, params: Any = None, commit: bool = False,
            results: bool = False) -> Any:  # fmt: skip
        if commit:
            return super().sql(query, params, commit=True, results=results)
        return retry_busy(lambda: super(_Storage, self).sql(query, params, results=results))


class _Huey(SqliteHuey):
    storage_class = _Storage


def _run(task_id: str) -> None:
    """Placeholder body: the worker runs attempts itself (see services.worker.dispatcher)."""
    raise RuntimeError("attempts are run by Herald's worker, not by a Huey consumer")


# Huey names a message's task by the module of its function: messages queued by earlier
# releases say "services.worker.queue.herald.run", so the name stays that whatever moves.
_run.__module__ = "services.worker.queue"


class TaskQueue:
    """Enqueue and dequeue task ids through Huey on SQLite."""

    def __init__(self, layout: DataLayout, *, checkpoint_pages: int | None = None) -> None:
        self.path = layout.queue_db
        self.huey = _Huey(QUEUE_NAME, filename=str(layout.queue_db), results=False, utc=True)
        if checkpoint_pages is not None:
            self.huey.storage.checkpoint_pages = checkpoint_pages
        self._run = self.huey.task(name="herald.run")(_run)

    def enqueue(self, task_id: str) -> None:
        self.huey.enqueue(self._run.s(task_id))

    def enqueue_many(self, task_ids: list[str]) -> None:
        """Enqueue several task ids, in order, in one transaction (all or none): the web's
        writer puts each group of new tasks in at once (`services.store.writer`)."""
        if len(task_ids) == 1:
            return self.enqueue(task_ids[0])
        storage = self.huey.storage
        rows = [(storage.name, storage.to_blob(self.huey.serialize_task(self._run.s(t))), 0)
                for t in task_ids]  # fmt: skip
        with storage.db(commit=True) as cursor:
            cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)

    def try_enqueue(self, task_id: str) -> bool:
        """Enqueue a task id if the queue's write lock is free now; False (nothing done) if
        another connection holds it: for a caller that must not wait for it."""
        storage = self.huey.storage
        blob = storage.to_blob(self.huey.serialize_task(self._run.s(task_id)))
        try:
            with storage.db(commit=True, wait=False) as cursor:
                cursor.execute("insert into task (queue, data, priority) values (?, ?, ?)",
                               (storage.name, blob, 0))  # fmt: skip
        except QueueBusy:
            return False
        return True

    def dequeue(self) -> str | None:
        """The next task id, or None; Huey deletes the message as it hands it out.

        A message that cannot be read is skipped (`next_task_id`).
        """
        return next_task_id(self.huey.dequeue)

    def checkpoint(self, *, truncate: bool = False, wait: float = 0.5) -> bool:
        """Copy the queue's WAL into its database (see TaskStore.checkpoint)."""
        storage = self.huey.storage
        return wal_checkpoint(storage.conn, storage.lock, truncate=truncate, wait=wait)

    def restart_wal(self) -> bool:
        """Start the queue's checkpointed WAL over now (see TaskStore.restart_wal)."""
        storage = self.huey.storage
        return restart_wal(storage.conn, storage.lock)

    def wal_size(self) -> int:
        """Bytes of the queue's WAL file."""
        try:
            return (self.path.parent / (self.path.name + "-wal")).stat().st_size
        except OSError:
            return 0

    def pending_ids(self) -> set[str]:
        """Task ids waiting in the queue."""
        return {str(t.args[0]) for t in self.huey.pending()}

    def __len__(self) -> int:
        return int(self.huey.pending_count())
