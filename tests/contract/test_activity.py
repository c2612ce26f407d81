"""The activity view's data on every backend: a principal's tasks finished in a window, per
bucket and outcome, and each task type's counts and nearest-rank run durations, computed
here from the ledger's own start and finish times."""

from __future__ import annotations

import time

import pytest

from services.core.states import TaskState
from services.store.activity import OUTCOMES, percentile
from tests.contract.checks import run_to_the_end


def test_counts_and_durations_of_the_principals_finished_tasks(store):
    start = time.time()
    time.sleep(0.005)
    plan = [("x", TaskState.SUCCEEDED)] * 3 + [("x", TaskState.FAILED), ("y", TaskState.CANCELLED)]
    ids = [run_to_the_end(store, "a", name=n, state=s)[0] for n, s in plan]
    early, _ = store.create_task(principal="a", name="y", args={})
    store.request_cancel(early.id, "a")  # finished, never started: counted, not timed
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)  # not finished: not counted
    run_to_the_end(store, "b", name="secret")  # another principal's
    time.sleep(0.005)
    end = time.time()
    recs = [store.get_task(i) for i in ids]
    bucket = (end - start) / 2

    act = store.activity("a", start, end, bucket)

    assert (act.start, act.end, act.bucket) == (start, end, bucket)
    assert [b.start for b in act.buckets] == pytest.approx([start, start + bucket])
    expected = [dict.fromkeys(OUTCOMES, 0) for _ in act.buckets]
    for rec in [*recs, store.get_task(early.id)]:
        expected[min(1, int((rec.finished_at - start) // bucket))][rec.state.value] += 1
    assert [b.counts for b in act.buckets] == expected
    assert act.totals == {"succeeded": 3, "failed": 1, "cancelled": 2}
    assert [t.name for t in act.tasks] == ["x", "y"]  # the busiest first
    x, y = act.tasks
    assert (x.n, x.timed, x.counts) == (4, 4, {"succeeded": 3, "failed": 1, "cancelled": 0})
    durations = sorted(r.finished_at - r.started_at for r in recs[:4])
    assert (x.p50, x.p95, x.max) == pytest.approx(
        (percentile(durations, 50), percentile(durations, 95), durations[-1])
    )
    assert (y.n, y.timed) == (2, 1)
    assert y.p50 == pytest.approx(recs[4].finished_at - recs[4].started_at)


def test_the_window_bounds_what_counts(store):
    run_to_the_end(store, "a")
    time.sleep(0.005)
    start = time.time()
    time.sleep(0.005)
    inside, _ = run_to_the_end(store, "a")
    time.sleep(0.005)
    end = time.time()
    time.sleep(0.005)
    run_to_the_end(store, "a")
    act = store.activity("a", start, end, 3600)
    assert len(act.buckets) == 1 and act.totals["succeeded"] == 1
    assert act.tasks[0].n == 1
    nobody = store.activity("nobody", start, end, 3600)
    assert nobody.tasks == [] and sum(nobody.totals.values()) == 0 and len(nobody.buckets) == 1


def test_an_empty_window_is_refused(store):
    now = time.time()
    with pytest.raises(ValueError):
        store.activity("a", now, now, 60)
    with pytest.raises(ValueError):
        store.activity("a", now, now + 60, 0)
