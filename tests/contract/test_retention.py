"""Retention on every backend: pruning finished tasks by age and by count with their
events, each principal's watermark (raised to the highest seq deleted, never lowered), and
the rule a resuming client follows: a cursor below the watermark must reload, one at or
above it misses nothing."""

from __future__ import annotations

import time

from services.core.delivery import plan_resume
from services.core.search import parse
from services.core.states import TaskState
from tests.contract.checks import (
    assert_ledger_agrees_with_log,
    numbers,
    origin,
    run_to_the_end,
    whole_log,
)


def _cut() -> float:
    """A wall time strictly between what finished before the call and what finishes after."""
    time.sleep(0.005)
    cut = time.time()
    time.sleep(0.005)
    return cut


def _marks(store, principals="ab"):
    """What `pruned_marks` must say: every principal whose `pruned_through` is not 0."""
    return {p: store.pruned_through(p) for p in principals if store.pruned_through(p)}


def _ids(store, principal="a"):
    return {t.id for t in store.list_tasks(principal, limit=1000)}


def test_prune_by_age_deletes_old_finished_tasks_and_their_events(store):
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    old = [run_to_the_end(store, state=s)[0]
           for s in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)]  # fmt: skip
    cut = _cut()
    new = [run_to_the_end(store)[0] for _ in range(2)]
    queued, _ = store.create_task(principal="a", name="x", args={})

    done = store.prune_batch(finished_before=cut)

    assert (done.tasks, done.events) == (3, 12)  # queued, started, progress, the end
    assert _ids(store) == {*new, running.id, queued.id}  # never-finished ones stay
    assert all(store.get_task(t) is None for t in old)
    assert all(store.events_after(0, task_id=t) == [] for t in old)
    assert all(len(store.events_after(0, task_id=t)) == 4 for t in new)
    assert (store.prune_batch(finished_before=cut).tasks, store.prune(older_than=3600).tasks) == (
        0,
        0,
    )
    assert store.prune(older_than=0).tasks == 2  # finished before now: the rest
    assert _ids(store) == {running.id, queued.id}
    assert_ledger_agrees_with_log(store, "a", pruned=True)


def test_prune_by_count_keeps_the_newest_finished(store):
    ids = [run_to_the_end(store, state=s)[0] for s in
           [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED] * 3]  # fmt: skip
    queued, _ = store.create_task(principal="a", name="x", args={})
    done = store.prune(keep=4, batch=2, pause=0)  # several batches
    assert (done.tasks, done.events) == (5, 20)
    assert _ids(store) == {*ids[-4:], queued.id}
    assert store.prune(keep=4).tasks == 0
    assert store.prune_batch(keep=0, limit=3).tasks == 3  # one batch's limit
    assert store.prune(keep=0).tasks == 1
    assert _ids(store) == {queued.id}


def test_prune_counts_finished_tasks_of_every_principal(store):
    mine = run_to_the_end(store, "a")[0]
    theirs = run_to_the_end(store, "b")[0]
    newest = run_to_the_end(store, "a")[0]
    assert store.prune(keep=1).tasks == 2
    assert _ids(store, "a") == {newest} and _ids(store, "b") == set()
    assert store.get_task(mine) is None and store.get_task(theirs) is None


def test_no_rule_prunes_nothing_and_a_stop_ends_early(store):
    for _ in range(3):
        run_to_the_end(store)
    assert store.prune().tasks == 0 and store.prune_batch().events == 0
    assert store.prune(keep=0, batch=1, pause=0, stop=lambda: True).tasks == 1
    assert len(_ids(store)) == 2


def test_the_watermark_is_per_principal_and_never_goes_down(store):
    a1, a1_events = run_to_the_end(store, "a")
    b1, b1_events = run_to_the_end(store, "b")
    cut = _cut()
    a2, _ = run_to_the_end(store, "a")
    oa, ob = origin(store, "a"), origin(store, "b")  # nothing pruned yet
    assert store.pruned_marks() == _marks(store)
    store.prune_batch(finished_before=cut)
    assert store.pruned_through("a") == a1_events[-1].seq == oa + 4
    assert store.pruned_through("b") == b1_events[-1].seq == ob + 4
    assert store.pruned_through("nobody") == 0
    assert store.pruned_marks() == _marks(store) == {"a": oa + 4, "b": ob + 4}
    assert numbers(store.events_after(oa + 4, principal="a"), oa) == [5, 6, 7, 8]
    store.prune(keep=0)
    assert store.pruned_through("a") == oa + 8 and store.pruned_through("b") == ob + 4
    assert store.pruned_marks() == {"a": oa + 8, "b": ob + 4}
    # Counters go on from where they were, even with every event gone.
    assert store.head("a") == oa + 8 and store.events_after(0, principal="a") == []
    _, later = run_to_the_end(store, "a")
    assert numbers(later, oa) == [9, 10, 11, 12]
    assert store.pruned_through("a") == oa + 8


def test_a_resume_from_before_the_watermark_must_reload_and_after_it_misses_nothing(store):
    # Two tasks whose events interleave: 1 q(t1) 2 q(t2) 3 s(t1) 4 s(t2) 5 end(t1) ...
    t1, _ = store.create_task(principal="a", name="x", args={})
    t2, _ = store.create_task(principal="a", name="x", args={})
    store.claim(t1.id, "w", 30)
    store.claim(t2.id, "w", 30)
    store.finish(t1.id, 1, TaskState.SUCCEEDED, result=1)
    cut = _cut()
    store.progress(t2.id, 1, 0.5, "half")
    other, _ = run_to_the_end(store, "b")  # another principal's, untouched
    before = whole_log(store, "a")
    oa, ob = origin(store, "a"), origin(store, "b")
    assert numbers(before, oa) == [1, 2, 3, 4, 5, 6]
    store.prune_batch(finished_before=cut)
    after = whole_log(store, "a")
    gone = [e.seq for e in before if e not in after]
    assert [s - oa for s in gone] == [1, 3, 5]  # t1's
    mark = store.pruned_through("a")
    assert mark >= max(gone)  # every deleted seq is at or below the watermark
    head = store.head("a")
    for cursor in [0, *range(oa, head + 1)]:
        plan = plan_resume(cursor, head, mark)
        missed = [s for s in gone if s > cursor]
        assert plan.reload == (0 < cursor < mark)
        if cursor == 0:  # it saw nothing that could be gone: what is left, no reload
            assert store.events_after(0, principal="a") == after
        elif not plan.reload:  # exact: every event after the cursor that ever existed
            assert missed == []
            assert store.events_after(cursor, principal="a") == [
                e for e in before if e.seq > cursor
            ]
    assert store.pruned_through("b") == ob and len(whole_log(store, "b")) == 4
    assert store.get_task(other) is not None
    assert_ledger_agrees_with_log(store, "a", pruned=True)


def test_events_of_cleared_tasks_go_by_age(store):
    tid, events = run_to_the_end(store)
    store.delete_task(tid, "a")  # "clear finished": the ledger row goes, its events stay
    assert store.events_after(0, task_id=tid) == events
    assert store.prune(keep=0).events == 0  # by count: only tasks the ledger has
    done = store.prune_batch(finished_before=time.time() + 1)
    assert (done.tasks, done.events) == (0, 4)
    assert store.events_after(0, task_id=tid) == []
    assert store.pruned_through("a") == events[-1].seq


def test_pruning_takes_tasks_out_of_search(store):
    ids = []
    for i in range(5):
        rec, _ = store.create_task(principal="a", name="demo", args={"word": f"apple{i}"})
        store.request_cancel(rec.id, "a")
        ids.append(rec.id)
    assert len(store.list_tasks("a", query=parse("apple"))) == 5
    store.prune(keep=2)
    assert [t.id for t in store.list_tasks("a", query=parse("apple"))] == ids[:2:-1]
