"""The event log on every backend: each principal's seqs are its own, one after another; reading
after a cursor by principal or by task, in pages bounded by count and by bytes; and a
batch of writes that is seen, or undone, as a whole."""

from __future__ import annotations

import pytest

from services.core.jsontext import compact
from services.core.states import TaskState
from tests.contract.checks import assert_ledger_agrees_with_log, numbers, origin, run_to_the_end


def test_each_principal_counts_its_own_events(store):
    assert store.head("a") == 0 and store.events_after(0, principal="a") == []
    a1, a_first = run_to_the_end(store, "a")
    _, b_events = run_to_the_end(store, "b")
    a2, a_second = run_to_the_end(store, "a")
    oa, ob = origin(store, "a"), origin(store, "b")
    assert numbers(a_first + a_second, oa) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert numbers(b_events, ob) == [1, 2, 3, 4]  # b's writes moved nothing of a's
    assert store.head("a") == oa + 8 and store.head("b") == ob + 4
    assert store.head("nobody") == 0
    assert store.events_after(0, principal="a") == a_first + a_second
    assert store.events_after(oa, principal="a") == a_first + a_second
    assert store.events_after(0, principal="b") == b_events
    assert numbers(store.events_after(oa + 2, principal="a"), oa) == [3, 4, 5, 6, 7, 8]
    assert store.events_after(oa + 8, principal="a") == []
    assert store.events_after(oa + 100, principal="a") == []
    assert store.events_after(0, principal="nobody") == []
    assert_ledger_agrees_with_log(store, "a")
    assert_ledger_agrees_with_log(store, "b")


def test_events_of_one_task(store):
    a1, first = run_to_the_end(store, "a")
    a2, second = run_to_the_end(store, "a")
    _, theirs = run_to_the_end(store, "b")
    oa = origin(store, "a")
    assert store.events_after(0, task_id=a1) == first
    assert numbers(store.events_after(oa + 5, task_id=a2), oa) == [6, 7, 8]
    assert numbers(store.events_after(0, task_id=a1, limit=2), oa) == [1, 2]
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


def test_writes_in_a_batch_return_as_usual_and_are_all_there_after(store, make_store):
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    b, queued = store.create_task(principal="a", name="x", args={})
    top = queued.seq
    with store.batch(isolated=False):
        claimed, started = store.claim(a.id, "w", 30)
        assert claimed.state is TaskState.RUNNING and started.seq == top + 1
        _, started_b = store.claim(b.id, "w", 30)
        progress = store.progress(b.id, 1, 0.5, "half")
        assert (started_b.seq, progress.seq) == (top + 2, top + 3)
        with store.batch():  # a nested batch joins the outer one
            output = store.output(a.id, 1, ["inner"])
    assert reader.get_task(a.id).state is TaskState.RUNNING
    assert reader.get_task(b.id).progress == 0.5
    assert reader.events_after(top, principal="a") == [started, started_b, progress, output]
    with store.batch():
        pass  # writes nothing: changes nothing
    assert reader.head("a") == top + 4
    assert_ledger_agrees_with_log(reader, "a")


def test_no_other_instance_sees_a_batch_before_it_ends(store, make_store):
    # The worker's group commit: the notifier must not push what may yet be undone.
    if not store.atomic_batches:
        return _each_write_of_a_plain_batch_is_seen_at_once(store, make_store)
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    b, queued = store.create_task(principal="a", name="x", args={})
    with store.batch(isolated=False):
        store.claim(a.id, "w", 30)
        store.claim(b.id, "w", 30)
        with store.batch():
            store.output(a.id, 1, ["inner"])
        assert reader.get_task(a.id).state is TaskState.QUEUED  # nothing committed yet
        assert reader.head("a") == queued.seq
        assert len(reader.events_after(0, principal="a")) == 2
    assert reader.head("a") == queued.seq + 3


@pytest.mark.parametrize("isolated", [False, True])
def test_an_exception_leaving_a_batch_undoes_all_of_it(store, make_store, isolated):
    # The worker's dispatcher relies on it: a round of writes that fails is undone as a
    # whole, then each write is run again on its own (services/worker/dispatcher.py _flush).
    if not store.atomic_batches:
        return _an_exception_undoes_nothing_of_a_plain_batch(store, make_store, isolated)
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    _, started = store.claim(a.id, "w", 30)
    top = started.seq
    with pytest.raises(RuntimeError), store.batch(isolated=isolated):
        store.progress(a.id, 1, 0.5, "half")
        store.finish(a.id, 1, TaskState.SUCCEEDED, result=1)
        store.create_task(principal="a", name="x", args={}, idempotency_key="k")
        raise RuntimeError("the whole round fails")
    for s in (store, reader):
        rec = s.get_task(a.id)
        assert rec.state is TaskState.RUNNING and rec.progress is None
        assert s.head("a") == top and len(s.list_tasks("a")) == 1
    # The undone events' seqs are given again: no gap.
    again, ev = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    assert ev is not None and ev.seq == top + 1  # the key was not taken either
    assert store.finish(a.id, 1, TaskState.SUCCEEDED, result=1).seq == top + 2
    assert_ledger_agrees_with_log(reader, "a")


# A backend whose writes are atomic one by one (`atomic_batches` False: Redis) says so, and
# holds to the other half of the bargain: what a plain batch wrote is there at once and
# stays, so the worker, which then runs its writes one by one and retries only the one the
# storage refused (dispatcher `_flush_one_by_one`), never records anything twice.


def _each_write_of_a_plain_batch_is_seen_at_once(store, make_store):
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    with store.batch(isolated=False):
        _, started = store.claim(a.id, "w", 30)
        assert reader.get_task(a.id).state is TaskState.RUNNING
        assert reader.head("a") == started.seq
        out = store.output(a.id, 1, ["seen"])
        assert reader.events_after(started.seq, principal="a") == [out]


def _an_exception_undoes_nothing_of_a_plain_batch(store, make_store, isolated):
    reader = make_store()
    a, _ = store.create_task(principal="a", name="x", args={})
    _, started = store.claim(a.id, "w", 30)
    with pytest.raises(RuntimeError), store.batch(isolated=isolated):
        progress = store.progress(a.id, 1, 0.5, "half")
        raise RuntimeError("the round fails after its first write")
    assert reader.get_task(a.id).progress == 0.5
    assert reader.events_after(started.seq, principal="a") == [progress]
    assert_ledger_agrees_with_log(reader, "a")
