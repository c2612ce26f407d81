"""The group writer (`services.store.writer`): every pending write in one transaction, in
order, each one's error its own, on a real SQLite file while another connection holds (or
not) the write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.store.sqlite import TaskStore
from services.store.writer import GroupWriter


@contextmanager
def write_lock_held(path: Path) -> Iterator[threading.Event]:
    """Another connection holds the database's write lock (BEGIN IMMEDIATE) until the
    event is set or the block ends."""
    release, taken = threading.Event(), threading.Event()

    def hold() -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(30)
            conn.execute("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        thread.join()


async def until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


@pytest.fixture
async def writer(store: TaskStore) -> AsyncIterator[GroupWriter]:
    w = GroupWriter(store.path)
    yield w
    await asyncio.to_thread(w.close)


def create(name: str) -> Any:
    return lambda s: s.create_task(principal="p", name=name, args={})


async def test_writes_pending_together_commit_in_one_transaction_in_order(
        store: TaskStore, writer: GroupWriter) -> None:  # fmt: skip
    with write_lock_held(store.path) as release:
        first = writer.write(create("t0"))  # its group waits for the lock
        await until(lambda: writer.writing == 1)
        rest = [writer.write(create(f"t{i}")) for i in range(1, 11)]
        assert writer.pending == 10
        release.set()
        done = await asyncio.gather(first, *rest)
    assert writer.groups == 2 and writer.writes == 11  # the ten waiting: one transaction
    seqs = [ev.seq for _, ev in done]
    assert seqs == sorted(seqs) == list(range(seqs[0], seqs[0] + 11))  # the callers' order
    assert [r.name for r in store.list_tasks("p", limit=20)][::-1] == [f"t{i}" for i in range(11)]


def raising_after_a_write(s: TaskStore) -> None:
    s.create_task(principal="p", name="half", args={})
    raise ValueError("this write fails after writing")


def undoing_the_transaction(s: TaskStore) -> None:
    """What SQLite does by itself on a full disk or an I/O error: the whole transaction
    is rolled back, and the statement fails."""
    s.create_task(principal="p", name="half", args={})
    s._conn.execute("ROLLBACK")
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.parametrize("failing", [raising_after_a_write, undoing_the_transaction])
async def test_an_error_in_one_write_fails_that_write_only(
        store: TaskStore, writer: GroupWriter, failing: Any) -> None:  # fmt: skip
    with write_lock_held(store.path) as release:
        first = writer.write(create("t0"))
        await until(lambda: writer.writing == 1)
        before = writer.groups
        ok1 = writer.write(create("t1"))
        bad = writer.write(failing)
        ok2 = writer.write(create("t2"))
        release.set()
        results = await asyncio.gather(first, ok1, bad, ok2, return_exceptions=True)
    assert isinstance(results[2], (ValueError, sqlite3.OperationalError)), results[2]
    assert all(isinstance(r, tuple) for i, r in enumerate(results) if i != 2), results
    assert writer.groups - before == 2  # (t0), then (t1, t2) together
    names = sorted(r.name for r in store.list_tasks("p", limit=20))
    assert names == ["t0", "t1", "t2"]  # nothing of the failed write, all of the others
    assert store.events_after(0, principal="p")[-1].seq == 3  # no gap in the seqs either


def test_a_wait_for_the_write_lock_is_counted_as_on_the_loop_only_there(tmp_path):
    """`retry_busy` tells waits on an event loop (every request of that loop waits) from
    waits in a thread without one, without importing asyncio itself."""
    import asyncio
    import sqlite3
    import threading

    from services.store.sqlite import WRITE_STATS, retry_busy

    path = tmp_path / "lock.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    other = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)

    def write_while_held() -> None:
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            retry_busy(lambda: other.execute("INSERT INTO t VALUES (1)"))
        finally:
            release.join()

    waits, on_loop = WRITE_STATS.lock_waits, WRITE_STATS.loop_lock_waits
    write_while_held()  # no loop in this thread
    assert WRITE_STATS.lock_waits > waits
    assert WRITE_STATS.loop_lock_waits == on_loop

    async def on_a_loop() -> None:
        write_while_held()

    waits = WRITE_STATS.lock_waits
    asyncio.run(on_a_loop())
    assert WRITE_STATS.lock_waits > waits
    assert WRITE_STATS.loop_lock_waits > on_loop
    holder.close()
    other.close()
