"""Retention in the SQLite store: pruning by age and count, the pruned-through watermark of
each principal, and emptying the WAL."""

import sqlite3
import time

import pytest

from services.core.states import TaskState
from services.store import TaskStore
from services.store.sqlite import JOURNAL_SIZE_LIMIT, SCHEMA_VERSION


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def _finished(store, principal="a", state=TaskState.SUCCEEDED):
    rec, _ = store.create_task(principal=principal, name="x", args={})
    store.claim(rec.id, "w", 30)
    store.progress(rec.id, 1, 0.5, "half")
    store.finish(rec.id, 1, state, result=1, error={"code": "x", "message": "no"})
    return rec.id


def _age(store, task_id, seconds):
    """Make a task look finished `seconds` ago (and its events as old)."""
    with store._write() as c:
        c.execute("UPDATE tasks SET finished_at = finished_at - ? WHERE id = ?",
                  (seconds, task_id))  # fmt: skip
        c.execute("UPDATE events SET ts = ts - ? WHERE task_id = ?", (seconds, task_id))


def _ids(store, principal="a"):
    return {t.id for t in store.list_tasks(principal, limit=1000)}


def test_prune_by_age_deletes_old_finished_tasks_and_their_events(store):
    old = [_finished(store) for _ in range(3)]
    new = [_finished(store) for _ in range(2)]
    for tid in old:
        _age(store, tid, 8 * 86400)
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    _age(store, running.id, 8 * 86400)  # never finished: never pruned, however old

    done = store.prune(older_than=7 * 86400)

    assert (done.tasks, done.events) == (3, 12)  # queued, started, progress, succeeded
    assert _ids(store) == {*new, running.id}
    assert all(store.events_after(0, task_id=t) == [] for t in old)
    assert all(len(store.events_after(0, task_id=t)) == 4 for t in new)
    assert store.prune(older_than=7 * 86400).tasks == 0


def test_prune_by_count_keeps_the_newest_finished(store):
    ids = [_finished(store, state=s) for s in
           [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED] * 3]  # fmt: skip
    queued, _ = store.create_task(principal="a", name="x", args={})
    done = store.prune(keep=4, batch=2)  # several batches
    assert done.tasks == 5
    assert _ids(store) == {*ids[-4:], queued.id}
    assert store.prune(keep=0).tasks == 4
    assert _ids(store) == {queued.id}


def test_the_watermark_is_per_principal_and_never_goes_down(store):
    a1 = _finished(store, "a")
    b1 = _finished(store, "b")
    a2 = _finished(store, "a")
    last_b1 = store.events_after(0, task_id=b1)[-1].seq
    last_a1 = store.events_after(0, task_id=a1)[-1].seq
    _age(store, b1, 100)
    _age(store, a1, 100)
    store.prune(older_than=50)
    assert store.pruned_through("a") == last_a1
    assert store.pruned_through("b") == last_b1
    assert store.pruned_through("nobody") == 0
    # a2's events were interleaved with nothing pruned after them: it stays complete.
    assert len(store.events_after(last_a1, principal="a")) == 4 and a2 in _ids(store, "a")
    store.prune(keep=0)
    assert store.pruned_through("a") > last_a1
    assert store.pruned_through("b") == last_b1


def test_events_of_cleared_tasks_go_by_age(store):
    tid = _finished(store)
    store.delete_task(tid, "a")  # "clear finished": the ledger row goes, its events stay
    assert len(store.events_after(0, task_id=tid)) == 4
    _age(store, tid, 100)
    done = store.prune(older_than=50)
    assert (done.tasks, done.events) == (0, 4)
    assert store.pruned_through("a") > 0


def test_no_rule_prunes_nothing(store):
    _finished(store)
    assert store.prune().tasks == 0
    assert len(_ids(store)) == 1


def test_an_older_database_gets_the_watermark_table(tmp_path):
    path = tmp_path / "herald.db"
    TaskStore(path).close()
    with sqlite3.connect(path) as c:
        c.execute("DROP TABLE pruned")
        c.execute("PRAGMA user_version = 2")
    s = TaskStore(path)
    assert s.pruned_through("a") == 0
    assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    s.close()


def test_truncate_checkpoint_empties_the_wal_while_another_connection_reads(store, tmp_path):
    for _ in range(300):
        _finished(store)
    assert store.sizes()["wal"] > 0
    reader = TaskStore(tmp_path / "herald.db")
    assert reader.head() > 0  # a reader between its reads holds no snapshot
    assert store.checkpoint(truncate=True)
    assert store.sizes()["wal"] == 0
    assert reader.head() == store.head()
    reader.close()


def test_truncate_waits_for_a_reader_then_gives_up(store, tmp_path):
    for _ in range(50):
        _finished(store)
    other = sqlite3.connect(tmp_path / "herald.db", isolation_level=None)
    other.execute("BEGIN")
    other.execute("SELECT COUNT(*) FROM events").fetchone()  # holds a snapshot of the WAL
    _finished(store)
    t0 = time.monotonic()
    assert not store.checkpoint(truncate=True, wait=0.2)
    assert time.monotonic() - t0 >= 0.2
    other.execute("COMMIT")
    assert store.checkpoint(truncate=True)
    other.close()


def test_connections_limit_what_a_wal_keeps(store):
    limit = store._conn.execute("PRAGMA journal_size_limit").fetchone()[0]
    assert limit == JOURNAL_SIZE_LIMIT
