"""The SQLite ledger and event log: transitions, ownership, leases and reaping."""

import sqlite3
import subprocess
import sys
import time

import pytest

from services.core.events import EventType
from services.core.states import TaskState
from services.store import TaskStore


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def test_create_records_a_queued_event(store):
    rec, ev = store.create_task(principal="a", name="demo.answer", args={"seconds": 0})
    assert rec.state is TaskState.QUEUED and rec.attempt == 0
    assert ev is not None and ev.type is EventType.QUEUED and ev.task_id == rec.id
    assert store.head() == ev.seq


def test_idempotency_key_returns_the_same_task_per_principal(store):
    first, ev1 = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    again, ev2 = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    other, _ = store.create_task(principal="b", name="x", args={}, idempotency_key="k")
    assert again.id == first.id and ev2 is None
    assert other.id != first.id


def test_a_full_attempt(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    claimed, started = store.claim(rec.id, "w", 30)
    assert claimed.state is TaskState.RUNNING and claimed.attempt == 1
    assert store.claim(rec.id, "w2", 30) == (None, None)  # only once
    store.progress(rec.id, 1, 0.5, "half")
    store.output(rec.id, 1, ["line"])
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"answer": 42})
    assert done.type is EventType.SUCCEEDED
    final = store.get_task(rec.id)
    assert (final.state, final.result, final.progress) == (TaskState.SUCCEEDED, {"answer": 42}, 1)
    types = [e.type for e in store.events_after(0, task_id=rec.id)]
    assert types == [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS, EventType.OUTPUT,
                     EventType.SUCCEEDED]  # fmt: skip
    assert store.finish(rec.id, 1, TaskState.FAILED, error={}) is None  # terminal stays


def test_owner_only(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    assert store.get_task(rec.id, principal="b") is None
    assert store.request_cancel(rec.id, "b") == (None, None)
    assert store.list_tasks("b") == []
    assert store.events_after(0, principal="b") == []


def test_cancel_queued_and_running(store):
    queued, _ = store.create_task(principal="a", name="x", args={})
    rec, ev = store.request_cancel(queued.id, "a")
    assert rec.state is TaskState.CANCELLED and ev.type is EventType.CANCELLED
    assert store.claim(queued.id, "w", 30) == (None, None)  # the worker skips it

    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    rec, ev = store.request_cancel(running.id, "a")
    assert rec.state is TaskState.RUNNING and rec.cancel_requested
    assert ev.type is EventType.CANCEL_REQUESTED
    assert store.cancel_requested("w") == {running.id}
    assert store.request_cancel(running.id, "a")[1] is None  # asked once


def test_list_is_newest_first_and_paginates(store):
    ids = [store.create_task(principal="a", name="x", args={})[0].id for _ in range(5)]
    page1 = store.list_tasks("a", limit=2)
    page2 = store.list_tasks("a", limit=2, before=page1[-1].n)
    assert [t.id for t in page1 + page2] == ids[::-1][:4]
    store.request_cancel(ids[0], "a")
    assert [t.id for t in store.list_tasks("a", states=[TaskState.CANCELLED])] == [ids[0]]


def _dead_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    import socket

    return f"{socket.gethostname()}:{proc.stdout.strip()}:dead"


def test_reap_requeues_then_fails_with_worker_lost(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_lost=2)
    dead = _dead_owner()
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].type is EventType.RETRYING and events[0].data["reason"] == "worker_lost"
    assert store.get_task(rec.id).state is TaskState.QUEUED
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert requeued == []
    assert events[0].type is EventType.FAILED
    final = store.get_task(rec.id)
    assert final.state is TaskState.FAILED and final.error["code"] == "worker_lost"
    assert (final.attempt, final.lost, final.failures) == (2, 2, 0)
    assert final.shown_max_attempts == 2  # the first loss added an attempt, the last did not


def test_reap_leaves_live_leases_and_releases_on_request(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "otherhost:1:x", 30)  # another host, lease still valid
    assert store.reap(live_worker="me") == ([], [])
    requeued, events = store.reap(release="otherhost:1:x")
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].data["reason"] == "worker_stopped"


def test_a_failure_waits_for_its_retry_in_the_ledger(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=3)
    claimed, _ = store.claim(rec.id, "w", 30)
    assert claimed.retries_left == 2
    ev = store.retry_later(rec.id, 1, delay=0.3, error={"code": "e", "message": "boom"})
    assert ev.type is EventType.RETRYING
    assert ev.data["reason"] == "failed" and ev.data["delay"] == 0.3
    assert ev.data["next_attempt"] == 2 and ev.data["max_attempts"] == 3
    waiting = store.get_task(rec.id)
    assert waiting.state is TaskState.QUEUED and waiting.failures == 1
    assert waiting.error == {"code": "e", "message": "boom"}
    assert waiting.message == "Will retry: boom"
    assert waiting.next_attempt_at == ev.data["at"]
    assert store.claim(rec.id, "w", 30) == (None, None)  # not before its time
    assert rec.id not in store.queued_ids()  # nor found as a lost queue message
    assert store.next_retries() == [(rec.id, ev.data["at"])]
    time.sleep(0.35)
    again, started = store.claim(rec.id, "w", 30)
    assert again.attempt == 2 and again.error is None and again.next_attempt_at is None
    assert again.retries_left == 1 and store.next_retries() == []
    # Stale writes of the earlier attempt change nothing.
    assert store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "x"}) is None


def test_losses_and_failures_are_counted_apart(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2, max_lost=3)
    store.claim(rec.id, "w", 30)
    store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "m"})
    store.claim(rec.id, "w", 30)
    before, ev = store.lose(rec.id, 2, detail="killed by SIGSEGV")
    assert ev.type is EventType.RETRYING and ev.data["reason"] == "worker_lost"
    assert ev.data["detail"] == "killed by SIGSEGV" and ev.data["lost_attempts"] == 1
    assert ev.data["max_attempts"] == 3  # the lost attempt is not held against it
    store.claim(rec.id, "w", 30)
    _, ev = store.lose(rec.id, 3, stopped=True)  # a clean stop: not lost
    assert ev.data["reason"] == "worker_stopped" and ev.data["lost_attempts"] == 1
    third = store.get_task(rec.id)
    assert (third.failures, third.lost, third.uncharged, third.shown_max_attempts) == (1, 1, 2, 4)
    assert third.retries_left == 0
    assert store.lose(rec.id, 3) == (None, None)  # not running any more


def test_claim_respects_a_limit_across_workers(store):
    first, _ = store.create_task(principal="a", name="one.at.a.time", args={})
    second, _ = store.create_task(principal="b", name="one.at.a.time", args={})
    other, _ = store.create_task(principal="a", name="other", args={})
    assert store.claim(first.id, "w1", 30, limit=1)[0] is not None
    assert store.claim(second.id, "w2", 30, limit=1) == (None, None)
    assert store.claim(other.id, "w2", 30, limit=1)[0] is not None  # per name
    store.finish(first.id, 1, TaskState.SUCCEEDED, result=None)
    assert store.claim(second.id, "w2", 30, limit=1)[0] is not None


def test_a_batch_commits_together_and_a_failed_write_alone_is_undone(store):
    a, _ = store.create_task(principal="a", name="x", args={})
    b, _ = store.create_task(principal="a", name="x", args={})
    with store.batch():
        store.claim(a.id, "w", 30)
        with pytest.raises(sqlite3.Error):
            with store._write() as c:  # a write that fails half-way
                c.execute("UPDATE tasks SET message = 'half' WHERE id = ?", (b.id,))
                c.execute("INSERT INTO no_such_table VALUES (1)")
        store.claim(b.id, "w", 30)
        reader = TaskStore(store.path)
        assert reader.get_task(a.id).state is TaskState.QUEUED  # nothing committed yet
    assert reader.get_task(a.id).state is TaskState.RUNNING
    assert reader.get_task(b.id).state is TaskState.RUNNING
    assert reader.get_task(b.id).message is None
    with pytest.raises(RuntimeError), store.batch():
        store.finish(a.id, 1, TaskState.SUCCEEDED, result=1)
        raise RuntimeError("the whole round fails")
    assert reader.get_task(a.id).state is TaskState.RUNNING
    reader.close()


V1_SCHEMA = """
CREATE TABLE tasks (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    principal TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
    progress REAL, message TEXT, result TEXT, error TEXT, attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT, lease_owner TEXT, lease_until REAL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
    principal TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL, attempt INTEGER NOT NULL,
    data TEXT NOT NULL);
INSERT INTO tasks (id, principal, name, args, state, max_attempts, created_at, updated_at)
    VALUES ('old', 'a', 'x', '{}', 'queued', 3, 1.0, 1.0);
"""


def test_a_database_of_the_first_release_is_migrated(tmp_path):
    path = tmp_path / "herald.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.close()
    store = TaskStore(path)
    old = store.get_task("old")
    assert (old.max_attempts, old.max_lost, old.failures, old.lost) == (1, 3, 0, 0)
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2, timeout=5)
    assert store.get_task(rec.id).timeout == 5
    store.close()
    again = TaskStore(path)  # a second open does not migrate twice
    assert again.get_task("old").max_lost == 3
    again.close()
