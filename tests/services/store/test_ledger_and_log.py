"""The SQLite ledger and event log: transitions, ownership, leases and reaping."""

import subprocess
import sys
import threading

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
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2)
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
    assert final.attempt == 2


def test_reap_leaves_live_leases_and_releases_on_request(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "otherhost:1:x", 30)  # another host, lease still valid
    assert store.reap(live_worker="me") == ([], [])
    requeued, events = store.reap(release="otherhost:1:x")
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].data["reason"] == "worker_stopped"


def test_seq_is_commit_order_across_connections(tmp_path):
    path = tmp_path / "herald.db"
    stores = [TaskStore(path) for _ in range(3)]

    def write(s: TaskStore) -> None:
        for _ in range(50):
            s.create_task(principal="a", name="x", args={})

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e.seq for e in stores[0].events_after(0)]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 150
