"""The event log on every backend: each principal's seqs are its own 1, 2, 3, ...; reading
after a cursor by principal or by task, in pages bounded by count and by bytes; and a
batch of writes that is seen, or undone, as a whole."""

from __future__ import annotations

import pytest

from services.core.events import EventType
from services.core.jsontext import compact
from services.core.states import TaskState
from tests.contract.checks import assert_ledger_agrees_with_log, run_to_the_end


def test_each_principal_counts_its_own_events(store):
    a1, a_first = run_to_the_end(store, "a")
    _, b_events = run_to_the_end(store, "b")
    a2, a_second = run_to_the_end(store, "a")
    assert [e.seq for e in a_first + a_second] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [e.seq for e in b_events] == [1, 2, 3, 4]
    assert store.head("a") == 8 and store.head("b") == 4 and store.head("nobody") == 0
    assert store.events_after(0, principal="a") == a_first + a_second
    assert store.events_after(0, principal="b") == b_events
    assert [e.seq for e in store.events_after(2, principal="a")] == [3, 4, 5, 6, 7, 8]
    assert [e.seq for e in store.events_after(8, principal="a")] == []
    assert [e.seq for e in store.events_after(100, principal="a")] == []
    assert store.events_after(0, principal="nobody") == []
    assert_ledger_agrees_with_log(store, "a")
    assert_ledger_agrees_with_log(store, "b")


def test_events_of_one_task(store):
    a1, first = run_to_the_end(store, "a")
    a2, second = run_to_the_end(store, "a")
    _, theirs = run_to_the_end(store, "b")
    assert store.events_after(0, task_id=a1) == first
    assert [e.seq for e in store.events_after(5, task_id=a2)] == [6, 7, 8]
    assert [e.seq for e in store.events_after(0, task_id=a1, limit=2)] == [1, 2]
    assert store.events_after(0, task_id=a2, principal="a") == second
    assert store.events_after(0, task_id=a2, principal="b") == []  # not b's task
    assert store.events_after(0, task_id="0" * 32) == []


def test_what_a_write_returns_is_what_the_log_holds(store):
    rec, queued = store.create_task(principal="a", name="x", args={"nested": {"list": [1, 2.5]}})
    _, started = store.claim(rec.id, "w", 30)
    progress = store.progress(rec.id, 1, None, None)  # indeterminate
    output = store.output(rec.id, 1, ["é ünïcode ✓", ""])
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result=[None, True, "x", 1e-9])
    logged = store.events_after(0, principal="a")
    assert logged == [queued, started, progress, output, done]  # data, ts, type, attempt
    assert [type(e.ts) for e in logged] == [float] * 5
    assert logged[0].ts <= logged[-1].ts
    assert progress.data == {"fraction": None, "message": None}


def test_pages_by_count_and_by_bytes(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "w", 30)
    lines = [[f"{i:03d}" + "x" * 96] for i in range(6)]  # the same size each, ASCII
    out = [store.output(rec.id, 1, line) for line in lines]
    size = len(compact({"lines": lines[0]}))
    after = out[0].seq - 1
    for kw in ({"principal": "a"}, {"task_id": rec.id}):
        assert store.events_after(after, **kw, limit=4) == out[:4]
        # A page stops after the event that takes it past max_bytes ...
        assert store.events_after(after, **kw, max_bytes=int(size * 2.5)) == out[:3]
        # ... and holds one event however small the bound.
        assert store.events_after(after, **kw, max_bytes=1) == out[:1]
        assert store.events_after(after, **kw, max_bytes=size * 100) == out
        assert store.events_after(after, **kw, max_bytes=size * 100, limit=2) == out[:2]
        assert store.events_after(out[-1].seq, **kw, max_bytes=1) == []


def test_a_batch_is_seen_as_a_whole(store, make_store):
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    b, _ = store.create_task(principal="a", name="x", args={})
    with store.batch(isolated=False):
        claimed, started = store.claim(a.id, "w", 30)
        assert claimed.state is TaskState.RUNNING and started.seq == 3  # returns as usual
        _, started_b = store.claim(b.id, "w", 30)
        progress = store.progress(b.id, 1, 0.5, "half")
        assert (started_b.seq, progress.seq) == (4, 5)
        with store.batch():  # a nested batch joins the outer one
            store.output(a.id, 1, ["inner"])
        assert reader.get_task(a.id).state is TaskState.QUEUED  # nothing committed yet
        assert reader.head("a") == 2 and len(reader.events_after(0, principal="a")) == 2
    assert reader.get_task(a.id).state is TaskState.RUNNING
    assert reader.get_task(b.id).progress == 0.5
    assert [e.type for e in reader.events_after(2, principal="a")] == [
        EventType.STARTED,
        EventType.STARTED,
        EventType.PROGRESS,
        EventType.OUTPUT,
    ]
    with store.batch():
        pass  # writes nothing: costs nothing, changes nothing
    assert reader.head("a") == 6
    assert_ledger_agrees_with_log(reader, "a")


@pytest.mark.parametrize("isolated", [False, True])
def test_an_exception_leaving_a_batch_undoes_all_of_it(store, make_store, isolated):
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    store.claim(a.id, "w", 30)
    with pytest.raises(RuntimeError), store.batch(isolated=isolated):
        store.progress(a.id, 1, 0.5, "half")
        store.finish(a.id, 1, TaskState.SUCCEEDED, result=1)
        store.create_task(principal="a", name="x", args={}, idempotency_key="k")
        raise RuntimeError("the whole round fails")
    for s in (store, reader):
        rec = s.get_task(a.id)
        assert rec.state is TaskState.RUNNING and rec.progress is None
        assert s.head("a") == 2 and len(s.list_tasks("a")) == 1
    # The undone events' seqs are given again: no gap.
    again, ev = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    assert ev is not None and ev.seq == 3  # the key was not taken either
    assert store.finish(a.id, 1, TaskState.SUCCEEDED, result=1).seq == 4
    assert_ledger_agrees_with_log(reader, "a")
