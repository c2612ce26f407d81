"""The activity query: finished tasks per bucket and outcome, and each type's durations."""

import sqlite3

import pytest

from services.core.states import TaskState
from services.store import TaskStore
from services.store.activity import percentile, query_activity

T0 = 1_800_000_000.0  # a round minute (and hour) in Unix time


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def finished(store, name, state, started, ended, principal="a"):
    """A task that ran from `started` to `ended` (Unix times) and ended in `state`; with
    `started` None, one cancelled before it started."""
    rec, _ = store.create_task(principal=principal, name=name, args={})
    if started is None:
        store.request_cancel(rec.id, principal)
    else:
        store.claim(rec.id, "w", 30)
        if state is TaskState.FAILED:
            store.finish(rec.id, 1, state, error={"code": "x", "message": "no"})
        else:
            store.finish(rec.id, 1, state, reason="cancelled")
    # The clock of the test, not of the machine.
    with sqlite3.connect(store.path) as c:
        c.execute("UPDATE tasks SET started_at = ?, finished_at = ? WHERE id = ?",
                  (started, ended, rec.id))  # fmt: skip
    return rec.id


def test_buckets_count_each_outcome_where_it_finished(store):
    s, f, c = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED
    finished(store, "x", s, T0 - 5, T0 + 1)  # bucket 0
    finished(store, "x", s, T0 + 30, T0 + 59.9)  # bucket 0 (its end, not its start)
    finished(store, "x", f, T0 + 50, T0 + 60)  # bucket 1: the start is inclusive
    finished(store, "y", c, None, T0 + 125)  # bucket 2
    finished(store, "y", s, T0 + 170, T0 + 179)  # bucket 2
    finished(store, "x", s, T0 - 10, T0 - 0.5)  # before the window
    finished(store, "x", s, T0 + 170, T0 + 180)  # at its end: outside
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)  # not finished: not counted
    act = store.activity("a", T0, T0 + 180, 60)
    assert [b.start for b in act.buckets] == [T0, T0 + 60, T0 + 120]
    assert [b.counts for b in act.buckets] == [
        {"succeeded": 2, "failed": 0, "cancelled": 0},
        {"succeeded": 0, "failed": 1, "cancelled": 0},
        {"succeeded": 1, "failed": 0, "cancelled": 1},
    ]
    assert act.totals == {"succeeded": 3, "failed": 1, "cancelled": 1}
    by_name = {t.name: t for t in act.tasks}
    assert [t.name for t in act.tasks] == ["x", "y"]  # the busiest first
    assert by_name["x"].counts == {"succeeded": 2, "failed": 1, "cancelled": 0}
    assert by_name["y"].n == 2 and by_name["y"].timed == 1  # the early cancel never ran
    assert by_name["y"].p50 == by_name["y"].p95 == pytest.approx(9)


def test_percentiles_are_nearest_rank_over_every_outcome(store):
    durations = [float(d) for d in range(1, 21)]  # 1..20 s
    for i, d in enumerate(durations):
        state = TaskState.FAILED if i % 5 == 0 else TaskState.SUCCEEDED
        finished(store, "slow", state, T0 + 100 - d, T0 + 100)
    finished(store, "quick", TaskState.SUCCEEDED, T0, T0 + 0.25)
    act = store.activity("a", T0, T0 + 3600, 60)
    slow = next(t for t in act.tasks if t.name == "slow")
    assert (slow.n, slow.timed) == (20, 20)
    assert slow.counts == {"succeeded": 16, "failed": 4, "cancelled": 0}
    assert (slow.p50, slow.p95, slow.max) == pytest.approx((10, 19, 20))
    quick = next(t for t in act.tasks if t.name == "quick")
    assert (quick.n, quick.p50, quick.p95, quick.max) == (1, 0.25, 0.25, 0.25)
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 95) == 4
    assert percentile([7], 50) == 7


def test_durations_are_bounded_to_the_newest_runs_and_counts_stay_exact(store):
    for i in range(10):
        finished(store, "x", TaskState.SUCCEEDED, T0 + i - (100 if i < 5 else 1), T0 + i)
    with sqlite3.connect(store.path) as c:
        act = query_activity(c, "a", T0, T0 + 60, 60, max_durations=5)
    (x,) = act.tasks
    assert (x.n, x.timed, x.p95) == (10, 5, pytest.approx(1))  # the five newest ran 1 s


def test_only_the_principals_own_tasks(store):
    finished(store, "x", TaskState.SUCCEEDED, T0, T0 + 1, principal="a")
    finished(store, "secret.task", TaskState.FAILED, T0, T0 + 2, principal="b")
    a = store.activity("a", T0, T0 + 60, 60)
    assert a.totals == {"succeeded": 1, "failed": 0, "cancelled": 0}
    assert [t.name for t in a.tasks] == ["x"]
    b = store.activity("b", T0, T0 + 60, 60)
    assert [t.name for t in b.tasks] == ["secret.task"] and b.totals["failed"] == 1
    nobody = store.activity("c", T0, T0 + 60, 60)
    assert nobody.tasks == [] and sum(nobody.totals.values()) == 0 and len(nobody.buckets) == 1


def test_each_query_searches_the_covering_index(store):
    from services.store import activity

    params = {"principal": "a", "start": T0, "end": T0 + 60, "bucket": 60, "limit": 5}
    with sqlite3.connect(store.path) as c:
        for sql in (activity._COUNTS, activity._DURATIONS):
            plan = " ".join(row[3] for row in c.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "COVERING INDEX tasks_principal_finished" in plan, plan
            assert "SCAN tasks" not in plan


def test_an_empty_window_is_refused(store):
    with pytest.raises(ValueError):
        store.activity("a", T0, T0, 60)
