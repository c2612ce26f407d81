"""The one writer of a process that serves an event loop: its writes, group-committed in a
thread of their own, so that no event loop ever waits for SQLite's write lock.

The web service's loop answers every request; while the worker holds the ledger's write
lock (its own short group commits), a write made on the loop would sleep there and stall
every request with it. Instead, the loop hands each write to a `GroupWriter` and awaits a
future. The writer's thread takes every write pending when it comes round, runs them in
order in ONE transaction (each in a savepoint of its own), commits, and only then answers
each caller: a 2xx is never sent for a write that is not committed. While it commits, new
writes gather for the next group; when it is idle, a write starts at once (no timer).

Promises kept:
- Order: one thread, first come first written; the writes of a group commit together in
  that order, so a principal's writes (and the log's seqs) follow the order of its calls.
- One write's error answers that write alone: its savepoint is undone, the others commit.
  When an error ends the whole transaction (SQLite rolls back by itself on a full disk or
  an I/O error), the writes done before it in the group are run again in a new one; a
  failed COMMIT fails every write of its group (none of them happened).
- After a group commits, the tasks it created are put into the queue in one transaction
  of the queue's own (`TaskQueue.enqueue_many`), before anyone is answered; what the queue
  refuses is handed back to the caller (the ledger is the truth: the task is accepted).

The writer has its own connection (its own `TaskStore`), so the loop's reads, on the
process's other connection, never wait for a lock the writer's thread holds.

A new task after a quiet moment is written on the loop itself (`create_task`): when the
thread has nothing to do and wrote nothing for `QUIET` seconds, the loop takes both write
locks only if they are free at once (never waiting: if another process holds one, the
write goes to the thread as above) and commits the one write there. Waking the thread
after an idle spell (its CPU halted) took 1.2-1.4 ms before it began to write, measured
on this 2-core machine: most of what the first task after idle lost over a warm one. In a
burst the thread is awake and writes in groups, as before. Nothing else changes: the
order (the thread was idle, so nothing is ahead of this write), the answers (a 2xx only
after the commit and the enqueue), and the checkpoint: a WAL near the size at which a
commit would checkpoint by itself sends the write to the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from services.store.sqlite import SAFETY_CHECKPOINT_PAGES, Event, TaskRecord, TaskStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchQueue(Protocol):
    """Where the tasks a group created are enqueued (a `services.queue.TaskQueue`)."""

    def enqueue_many(self, task_ids: list[str]) -> None: ...

    def try_enqueue(self, task_id: str) -> bool: ...

    def wal_size(self) -> int: ...


# A write comes after this long without one (and the thread idle): it is written on the
# loop if the locks are free (see the module's docstring).
QUIET = 0.002
# ... unless a WAL has grown to this share of the size at which a commit checkpoints.
INLINE_WAL_SHARE = 0.5
PAGE_BYTES = 4096  # SQLite's default page size, which Herald's databases keep


@dataclass(frozen=True, slots=True)
class Created:
    """What `GroupWriter.create_task` did: the ledger's answer (`TaskStore.create_task`),
    and why the queue refused the new task's message, if it did (None: it is enqueued, or
    was not to be)."""

    record: TaskRecord
    event: Event | None
    queue_error: Exception | None = None


@dataclass(slots=True)
class _Write:
    run: Callable[[TaskStore], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    created: bool = False  # a create_task: its answer becomes a `Created`
    enqueue: bool = False  # ... whose new task goes into the queue
    plain: bool = False  # no ledger write: run after the group's commit (`GroupWriter.call`)


def _reply(replies: list[tuple[_Write, Any, BaseException | None]]) -> None:
    """Hand outcomes to their loops, one wake-up of each loop for all of its own (a loop
    closed meanwhile has no one left to tell)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any,
                                                          BaseException | None]]] = {}
    for w, result, error in replies:
        by_loop.setdefault(w.loop, []).append((w.future, result, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:
            pass


class _GroupUndone(Exception):
    """An error ended the group's transaction: its earlier writes must run again."""


def _settle_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # its caller went away: the write happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class GroupWriter:
    """Every write of this process's event loop, group-committed in one thread.

    Args:
        path: the ledger's SQLite file (the writer opens a connection of its own).
        queue: where the tasks `create_task` records are enqueued after their commit.

    Counters (for the bench and the tests): `groups` committed (one transaction each),
    `writes` done in them, `enqueues` (queue transactions for their new tasks).
    """

    def __init__(self, path: Path | str, queue: BatchQueue | None = None) -> None:
        self.path = Path(path)
        self.queue = queue
        self._store: TaskStore | None = None
        self._pending: deque[_Write] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.groups = 0
        self.writes = 0
        self.enqueues = 0
        self.inline = 0  # of the groups, those written on the loop
        self._writing = 0
        self._wrote_at = 0.0  # time.monotonic() when the last write ended

    def write(self, run: Callable[[TaskStore], T]) -> asyncio.Future[T]:
        """Run `run(store)` in the writer's next group; a future of what it returns (or
        raises), set on the calling loop once its group has committed.

        Raises:
            RuntimeError: the writer is closed.
        """
        return self._add(_Write(run, asyncio.get_running_loop(),
                                asyncio.get_running_loop().create_future()))

    def _add(self, w: _Write) -> asyncio.Future[Any]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the writer is closed")
            self._pending.append(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="herald-writer",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            else:
                self._cond.notify()
        return w.future

    def call(self, run: Callable[[], T]) -> asyncio.Future[T]:
        """Run `run()` in the writer's thread, outside any ledger transaction, after the
        writes of the group it joins (for the queue's own writes, which must not wait
        on the loop either); a future of what it returns or raises."""
        loop = asyncio.get_running_loop()
        return self._add(_Write(lambda _: run(), loop, loop.create_future(), plain=True))

    async def create_task(self, *, enqueue: bool = True, **kwargs: Any) -> Created:
        """`TaskStore.create_task(**kwargs)` in a group; with `enqueue`, a new task is then
        put into the queue (an idempotent replay is not). After a quiet moment, on the loop
        if the locks are free (see the module's docstring)."""
        enqueue = enqueue and self.queue is not None
        done = self._create_inline(kwargs)
        if done is not None:
            rec, event = done
            if not enqueue or event is None:
                return Created(rec, event)
            return Created(rec, event, await self._enqueue_after_inline(rec.id))
        loop = asyncio.get_running_loop()
        result: Created = await self._add(_Write(
            lambda store: store.create_task(**kwargs), loop, loop.create_future(),
            created=True, enqueue=enqueue))  # fmt: skip
        return result

    def _quiet(self) -> bool:
        """Nothing pending or being written, and nothing written for `QUIET` seconds."""
        with self._cond:
            busy = self._closed or self._pending or self._writing
        return not busy and time.monotonic() - self._wrote_at >= QUIET

    def _create_inline(self, kwargs: dict[str, Any]) -> tuple[TaskRecord, Event | None] | None:
        """`TaskStore.create_task(**kwargs)` committed on this thread, if it is quiet and the
        ledger's lock is free now; None if not (nothing was written)."""
        if not self._quiet():
            return None
        store = self._open()
        queue = self.queue
        limit = SAFETY_CHECKPOINT_PAGES * PAGE_BYTES * INLINE_WAL_SHARE
        if store.wal_bytes() > limit or (queue is not None and queue.wal_size() > limit):
            return None  # a commit might checkpoint: not on the loop
        with self._cond:
            self._writing = 1  # the thread's answer to `writing` while this writes
        try:
            with store.batch(isolated=False):
                if not store.try_begin():
                    return None  # another process writes: the thread waits for it
                created: tuple[TaskRecord, Event | None] = store.create_task(**kwargs)
            self.groups += 1
            self.writes += 1
            self.inline += 1
            return created
        finally:
            with self._cond:
                self._writing = 0
            self._wrote_at = time.monotonic()

    async def _enqueue_after_inline(self, task_id: str) -> Exception | None:
        """Enqueue a task created on the loop: there too if the queue's lock is free now,
        else in the thread (idle, so this goes ahead of every write after it); what the
        queue raised, if it refused it (as `Created.queue_error`)."""
        assert self.queue is not None
        queue = self.queue
        self.enqueues += 1
        try:
            if not queue.try_enqueue(task_id):
                await self.call(lambda: queue.enqueue_many([task_id]))
        except Exception as exc:
            return exc
        return None

    @property
    def pending(self) -> int:
        """Writes waiting for the next group (not those of the group being written)."""
        with self._cond:
            return len(self._pending)

    @property
    def writing(self) -> int:
        """Writes of the group being written now (0: the writer is idle)."""
        return self._writing

    def close(self) -> None:
        """Write what is pending, then stop the thread and close the connection."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._store is not None:
            self._store.close()
            self._store = None

    # ---------------------------------------------------------------- the thread

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                group = list(self._pending)
                self._pending.clear()
                self._writing = len(group)
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - every caller must get an answer
                log.exception("the writer failed a group of %d writes", len(group))
                _reply([(w, None, exc) for w in group])
            self._wrote_at = time.monotonic()
            self._writing = 0

    def _open(self) -> TaskStore:
        with self._cond:
            if self._store is None:
                self._store = TaskStore(self.path)
            return self._store

    def _commit(self, group: list[_Write]) -> None:
        """Run a group's writes in one transaction, answer each, enqueue what it created;
        then its plain calls."""
        store = self._open()
        self._transact(store, [w for w in group if not w.plain])
        for w in group:
            if w.plain:
                try:
                    result = w.run(store)
                except Exception as exc:
                    _reply([(w, None, exc)])
                else:
                    _reply([(w, result, None)])

    def _transact(self, store: TaskStore, todo: list[_Write]) -> None:
        while todo:
            done: list[tuple[_Write, Any]] = []
            try:
                with store.batch(isolated=False):  # each write: store.atomic()
                    for i, w in enumerate(todo):
                        try:
                            with store.atomic():
                                done.append((w, w.run(store)))
                        except Exception as exc:
                            _reply([(w, None, exc)])
                            if done and not store.in_transaction:
                                todo = [d for d, _ in done] + todo[i + 1:]
                                raise _GroupUndone from exc
            except _GroupUndone:
                continue
            except Exception as exc:  # the COMMIT failed: none of them happened
                _reply([(w, None, exc) for w, _ in done])
                return
            self.groups += 1
            self.writes += len(done)
            self._answer(done)
            return

    def _answer(self, done: list[tuple[_Write, Any]]) -> None:
        new = [(w, result) for w, result in done if w.enqueue and result[1] is not None]
        queue_error: Exception | None = None
        if new and self.queue is not None:
            self.enqueues += 1
            try:
                self.queue.enqueue_many([result[0].id for _, result in new])
            except Exception as exc:
                queue_error = exc
        enqueued = {id(w) for w, _ in new}
        replies: list[tuple[_Write, Any, BaseException | None]] = []
        for w, result in done:
            if w.created:
                rec, event = result
                result = Created(rec, event, queue_error if id(w) in enqueued else None)
            replies.append((w, result, None))
        _reply(replies)


class SerialWriter:
    """`GroupWriter`'s interface for a backend whose every write is one atomic round trip
    of its own (Redis: a Lua script): no transaction to share, so no group commit. The
    writes run in order in one thread (a principal's writes, and the log's seqs, follow
    the order of its calls; the loop never waits on the network) and each is answered
    after it is written; a new task is enqueued before its caller is answered.

    Args:
        store: the ledger (thread-safe; its connection pool serves the thread).
        queue: where the tasks `create_task` makes go.
    """

    def __init__(self, store: Any, queue: BatchQueue | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self.queue = queue
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-writer")
        self._closed = False
        self._pending = 0
        self.groups = 0
        self.writes = 0
        self.enqueues = 0
        self.inline = 0

    def _submit(self, run: Callable[[], T]) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the writer is closed")
        self._pending += 1

        def counted() -> T:
            try:
                return run()
            finally:
                self._pending -= 1

        return asyncio.wrap_future(self._pool.submit(counted))

    def write(self, run: Callable[[Any], T]) -> asyncio.Future[T]:
        """Run `run(store)` in the writer's thread; a future of what it returns or raises."""
        def one() -> T:
            result = run(self._store)
            self.groups += 1
            self.writes += 1
            return result

        return self._submit(one)

    def call(self, run: Callable[[], T]) -> asyncio.Future[T]:
        """Run `run()` in the writer's thread, after the writes submitted before it."""
        return self._submit(run)

    async def create_task(self, *, enqueue: bool = True, **kwargs: Any) -> Created:
        """`create_task(**kwargs)`, then (with `enqueue`, for a new task) its message."""
        queue = self.queue if enqueue else None

        def create() -> Created:
            rec, event = self._store.create_task(**kwargs)
            self.groups += 1
            self.writes += 1
            if queue is None or event is None:
                return Created(rec, event)
            self.enqueues += 1
            try:
                queue.enqueue_many([rec.id])
            except Exception as exc:
                return Created(rec, event, exc)
            return Created(rec, event)

        return await self._submit(create)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def writing(self) -> int:
        return min(1, self._pending)

    def close(self) -> None:
        """Write what is pending, then stop the thread (the store is its owner's)."""
        self._closed = True
        self._pool.shutdown(wait=True)
