"""The Redis ledger and event log (`RedisTaskStore`) on a real redis-server: the SQLite
store's behaviour tests lifted onto it (seqs compared relative to the principal's first,
since a Redis counter starts at its floor), and what is Redis's own: the epoch floor after
a lost dataset, an AOF restart, reapers racing, trimming the streams."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from services.core.delivery import plan_resume
from services.core.events import EventType
from services.core.search import parse
from services.core.states import TaskState
from services.store.redisstore import RedisTaskStore
from services.store.sqlite import PruneResult
from tests.redis_server import RedisServer


@pytest.fixture
def store(redis_url):
    s = RedisTaskStore(redis_url)
    yield s
    s.close()


def _dead_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return f"{socket.gethostname()}:{proc.stdout.strip()}:dead"


def _finished(store, principal="a", state=TaskState.SUCCEEDED):
    rec, _ = store.create_task(principal=principal, name="x", args={})
    store.claim(rec.id, "w", 30)
    store.progress(rec.id, 1, 0.5, "half")
    store.finish(rec.id, 1, state, result=1, error={"code": "x", "message": "no"})
    return rec.id


def _set_times(store, task_id, *, finished_at=None, started_at=None, shift=None):
    """Move a task's times as a test's clock says (the ledger's hash and the sorted sets
    that index it: finished tasks by finished_at, deleted ones' events likewise)."""
    r, key = store._r, store._key("t", task_id)
    if shift is not None:
        finished_at = float(r.hget(key, "finished_at")) - shift
    if started_at is not None:
        r.hset(key, "started_at", repr(started_at))
    if finished_at is None:
        return
    if r.exists(key):
        principal = r.hget(key, "principal")
        r.hset(key, "finished_at", repr(finished_at))
        r.zadd(store._key("fin"), {task_id: finished_at})
        r.zadd(store._key("fin", principal), {task_id: finished_at})
    if r.zscore(store._key("orphans"), task_id) is not None:
        r.zadd(store._key("orphans"), {task_id: finished_at})


def _ids(store, principal="a"):
    return {t.id for t in store.list_tasks(principal, limit=1000)}


def _lifecycle(store, principal):
    rec, queued = store.create_task(principal=principal, name="demo", args={})
    _, started = store.claim(rec.id, "w", 60)
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1)
    return rec.id, [queued, started, done]


def _agrees(store, task_id):
    """The ledger and the log agree: the task's state is what its last event says."""
    from services.core.events import STATE_AFTER

    rec = store.get_task(task_id)
    states = [STATE_AFTER[e.type] for e in store.events_after(0, task_id=task_id)]
    assert rec.state is [s for s in states if s is not None][-1]


# ------------------------------------------------------------- the SQLite store's behaviour


def test_a_full_attempt(store):
    rec, ev = store.create_task(principal="a", name="x", args={"seconds": 0})
    assert rec.state is TaskState.QUEUED and rec.attempt == 0 and ev.type is EventType.QUEUED
    assert store.head("a") == ev.seq and store.get_task(rec.id) == rec
    claimed, started = store.claim(rec.id, "w", 30)
    assert claimed.state is TaskState.RUNNING and claimed.attempt == 1
    assert started.data == {"attempt": 1} and started.seq == ev.seq + 1
    assert store.claim(rec.id, "w2", 30) == (None, None)  # only once
    store.progress(rec.id, 1, 0.5, "half")
    store.output(rec.id, 1, ["line"])
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"answer": 42})
    assert done.type is EventType.SUCCEEDED and done.data == {"result": {"answer": 42}}
    final = store.get_task(rec.id)
    assert (final.state, final.result, final.progress) == (TaskState.SUCCEEDED, {"answer": 42}, 1)
    assert final.message == "half" and final.lease_owner is None
    events = store.events_after(0, task_id=rec.id)
    assert [e.type for e in events] == [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS,
                                        EventType.OUTPUT, EventType.SUCCEEDED]  # fmt: skip
    assert events == store.events_after(0, principal="a")
    assert store.finish(rec.id, 1, TaskState.FAILED, error={}) is None  # terminal stays
    _agrees(store, rec.id)


def test_idempotency_key_returns_the_same_task_per_principal(store):
    first, _ = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    again, ev2 = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    other, _ = store.create_task(principal="b", name="x", args={}, idempotency_key="k")
    assert again == first and ev2 is None
    assert other.id != first.id


def test_owner_only(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    assert store.get_task(rec.id, principal="b") is None
    assert store.request_cancel(rec.id, "b") == (None, None)
    assert store.delete_task(rec.id, "b") is None
    assert store.list_tasks("b") == [] and store.tasks_by_id_prefix(rec.id[:3], "b") == []
    assert store.events_after(0, principal="b") == []
    assert store.events_after(0, principal="b", task_id=rec.id) == []
    assert store.tasks_by_id_prefix(rec.id[:3], "a") == [rec.id]
    assert store.tasks_by_id_prefix("xyz", "a") == []


def test_cancel_queued_and_running(store):
    queued, _ = store.create_task(principal="a", name="x", args={})
    rec, ev = store.request_cancel(queued.id, "a")
    assert rec.state is TaskState.CANCELLED and ev.type is EventType.CANCELLED
    assert ev.data == {"reason": "cancelled before it started"}
    assert store.claim(queued.id, "w", 30) == (None, None)  # the worker skips it
    assert store.queued_ids() == []

    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    rec, ev = store.request_cancel(running.id, "a")
    assert rec.state is TaskState.RUNNING and rec.cancel_requested
    assert ev.type is EventType.CANCEL_REQUESTED
    assert store.cancel_requested("w") == {running.id}
    assert store.request_cancel(running.id, "a")[1] is None  # asked once
    _, lost = store.lose(running.id, 1)
    assert lost.type is EventType.CANCELLED
    assert store.get_task(running.id).state is TaskState.CANCELLED
    _agrees(store, running.id)


def test_list_is_newest_first_and_paginates(store):
    ids = [store.create_task(principal="a", name="x", args={})[0].id for _ in range(5)]
    page1 = store.list_tasks("a", limit=2)
    page2 = store.list_tasks("a", limit=2, before=page1[-1].pn)
    assert [t.id for t in page1 + page2] == ids[::-1][:4]
    store.request_cancel(ids[0], "a")
    assert [t.id for t in store.list_tasks("a", states=[TaskState.CANCELLED])] == [ids[0]]
    assert store.queued_ids() == ids[1:]


def test_reap_requeues_then_fails_with_worker_lost(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_lost=2)
    dead = _dead_owner()
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].type is EventType.RETRYING and events[0].data == {
        "reason": "worker_lost", "next_attempt": 2, "delay": 0, "at": None,
        "max_attempts": 2, "lost_attempts": 1, "detail": "its worker was gone"}  # fmt: skip
    assert store.get_task(rec.id).state is TaskState.QUEUED and store.leased_to(dead) == []
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert requeued == []
    assert events[0].type is EventType.FAILED
    final = store.get_task(rec.id)
    assert final.state is TaskState.FAILED and final.error["code"] == "worker_lost"
    assert final.error["message"] == ("The process running this task was lost 2 times; giving "
                                      "up. (Last time: its worker was gone.)")  # fmt: skip
    assert (final.attempt, final.lost, final.failures) == (2, 2, 0)
    assert final.shown_max_attempts == 2
    _agrees(store, rec.id)


def test_reap_leaves_live_leases_and_releases_on_request(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "otherhost:1:x", 30)  # another host, lease still valid
    assert store.reap(live_worker="me") == ([], [])
    assert store.leased_to("otherhost:1:x") == [(rec.id, 1)]
    requeued, events = store.reap(release="otherhost:1:x")
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].data["reason"] == "worker_stopped"


def test_an_expired_lease_is_reaped_unless_renewed(store):
    a, _ = store.create_task(principal="a", name="x", args={})
    b, _ = store.create_task(principal="a", name="x", args={})
    store.claim(a.id, "otherhost:1:x", 0.2)
    store.claim(b.id, "otherhost:1:x", 0.2)
    store.renew_leases("otherhost:1:x", 30, [b.id])
    time.sleep(0.3)
    requeued, events = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [a.id] and events[0].data["reason"] == "worker_lost"
    assert store.leased_to("otherhost:1:x") == [(b.id, 1)]
    store.renew_leases("otherhost:1:x", 0.1)  # all of its leases
    time.sleep(0.2)
    assert [r.id for r in store.reap(live_worker="me")[0]] == [b.id]


def test_a_failure_waits_for_its_retry_in_the_ledger(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=3)
    claimed, _ = store.claim(rec.id, "w", 30)
    assert claimed.retries_left == 2
    ev = store.retry_later(rec.id, 1, delay=0.3, error={"code": "e", "message": "boom"})
    assert ev.type is EventType.RETRYING
    assert ev.data["reason"] == "failed" and ev.data["delay"] == 0.3
    assert ev.data["next_attempt"] == 2 and ev.data["max_attempts"] == 3
    assert ev.data["error"] == {"code": "e", "message": "boom"} and ev.data["lost_attempts"] == 0
    waiting = store.get_task(rec.id)
    assert waiting.state is TaskState.QUEUED and waiting.failures == 1
    assert waiting.error == {"code": "e", "message": "boom"}
    assert waiting.message == "Will retry: boom"
    assert waiting.next_attempt_at == ev.data["at"]
    assert store.claim(rec.id, "w", 30) == (None, None)  # not before its time
    assert rec.id not in store.queued_ids()  # nor found as a lost queue message
    assert store.next_retries() == [(rec.id, ev.data["at"])]
    time.sleep(0.35)
    assert store.queued_ids() == [rec.id]
    again, _ = store.claim(rec.id, "w", 30)
    assert again.attempt == 2 and again.error is None and again.next_attempt_at is None
    assert again.retries_left == 1 and store.next_retries() == []
    assert store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "x"}) is None


def test_losses_and_failures_are_counted_apart(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2, max_lost=3)
    store.claim(rec.id, "w", 30)
    store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "m"})
    store.claim(rec.id, "w", 30)
    _, ev = store.lose(rec.id, 2, detail="killed by SIGSEGV")
    assert ev.type is EventType.RETRYING and ev.data["reason"] == "worker_lost"
    assert ev.data["detail"] == "killed by SIGSEGV" and ev.data["lost_attempts"] == 1
    assert ev.data["max_attempts"] == 3
    store.claim(rec.id, "w", 30)
    _, ev = store.lose(rec.id, 3, stopped=True)
    assert ev.data["reason"] == "worker_stopped" and ev.data["lost_attempts"] == 1
    third = store.get_task(rec.id)
    assert (third.failures, third.lost, third.uncharged, third.shown_max_attempts) == (1, 1, 2, 4)
    assert third.message == "Worker stopped; will run again"
    assert store.lose(rec.id, 3) == (None, None)


def test_claim_respects_a_limit_across_workers(store):
    first, _ = store.create_task(principal="a", name="one.at.a.time", args={})
    second, _ = store.create_task(principal="b", name="one.at.a.time", args={})
    other, _ = store.create_task(principal="a", name="other", args={})
    assert store.claim(first.id, "w1", 30, limit=1)[0] is not None
    assert store.claim(second.id, "w2", 30, limit=1) == (None, None)
    assert store.claim(other.id, "w2", 30, limit=1)[0] is not None  # per name
    store.finish(first.id, 1, TaskState.SUCCEEDED, result=None)
    assert store.claim(second.id, "w2", 30, limit=1)[0] is not None
    store.lose(second.id, 1)  # every way out of running gives the slot back
    third, _ = store.create_task(principal="b", name="one.at.a.time", args={})
    assert store.claim(third.id, "w2", 30, limit=1)[0] is not None


def test_finish_failed_and_cancelled_say_why(store):
    failed, _ = store.create_task(principal="a", name="x", args={})
    store.claim(failed.id, "w", 30)
    ev = store.finish(failed.id, 1, TaskState.FAILED, error={"code": "e", "message": "bad"})
    assert ev.data == {"error": {"code": "e", "message": "bad"}}
    assert store.get_task(failed.id).message == "bad"
    killed, _ = store.create_task(principal="a", name="x", args={})
    store.claim(killed.id, "w", 30)
    ev = store.finish(killed.id, 1, TaskState.CANCELLED, reason="cancelled",
                      extra={"forced": True, "grace": 5})  # fmt: skip
    assert ev.data == {"reason": "cancelled", "forced": True, "grace": 5}
    rec = store.get_task(killed.id)
    assert rec.message == "Stopped by force after 5 s" and rec.state is TaskState.CANCELLED


def test_each_principal_counts_its_own_events(store):
    a1, a_first = _lifecycle(store, "a")
    _, b_events = _lifecycle(store, "b")
    a2, a_second = _lifecycle(store, "a")
    base = a_first[0].seq - 1
    assert [e.seq - base for e in a_first + a_second] == [1, 2, 3, 4, 5, 6]
    b0 = b_events[0].seq - 1
    assert [e.seq - b0 for e in b_events] == [1, 2, 3]
    assert store.head("a") == base + 6 and store.head("b") == b0 + 3 and store.head("x") == 0
    assert [e.seq - base for e in store.events_after(base + 2, principal="a")] == [3, 4, 5, 6]
    assert [e.seq - base for e in store.events_after(base + 4, task_id=a2)] == [5, 6]
    assert [e.seq - base for e in store.events_after(0, task_id=a1, limit=2)] == [1, 2]
    with pytest.raises(NotImplementedError):
        store.events_after(0)
    with pytest.raises(NotImplementedError):
        store.head()


def test_the_task_list_cursor_counts_the_principals_own_tasks(store):
    mine = []
    for _ in range(3):
        mine.append(_lifecycle(store, "a")[0])
        _lifecycle(store, "b")
    recs = store.list_tasks("a")
    assert [r.id for r in recs] == mine[::-1] and [r.pn for r in recs] == [3, 2, 1]
    assert [r.id for r in store.list_tasks("a", before=3, limit=1)] == [mine[1]]
    assert [r.pn for r in store.list_tasks("b")] == [3, 2, 1]


def test_max_bytes_cuts_a_page_after_the_event_that_passes_it(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "w", 30)
    for _ in range(5):
        store.output(rec.id, 1, ["x" * 100])
    for kw in ({"principal": "a"}, {"task_id": rec.id}):
        page = store.events_after(0, max_bytes=150, **kw)
        # queued (~40 bytes), started, then the first output passes 150 bytes
        assert [e.type for e in page] == [EventType.QUEUED, EventType.STARTED, EventType.OUTPUT]


# ------------------------------------------------------------------------------- retention


def test_prune_by_age_deletes_old_finished_tasks_and_their_events(store):
    old = [_finished(store) for _ in range(3)]
    new = [_finished(store) for _ in range(2)]
    for tid in old:
        _set_times(store, tid, shift=8 * 86400)
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    done = store.prune(older_than=7 * 86400)
    assert (done.tasks, done.events) == (3, 12)  # queued, started, progress, succeeded
    assert _ids(store) == {*new, running.id}
    assert all(store.events_after(0, task_id=t) == [] for t in old)
    assert all(len(store.events_after(0, task_id=t)) == 4 for t in new)
    assert len(store.events_after(0, principal="a")) == 2 * 4 + 2
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
    assert [e.task_id for e in store.events_after(0, principal="a")] == [queued.id]


def test_the_watermark_is_per_principal_never_goes_down_and_resets_a_resume(store):
    a1 = _finished(store, "a")
    b1 = _finished(store, "b")
    a2 = _finished(store, "a")
    last_b1 = store.events_after(0, task_id=b1)[-1].seq
    last_a1 = store.events_after(0, task_id=a1)[-1].seq
    first_a = store.events_after(0, task_id=a1)[0].seq
    floor_a, floor_b = store.pruned_through("a"), store.pruned_through("b")
    assert floor_a == first_a - 1  # the counter's floor (see test_a_flushed_dataset...)
    _set_times(store, b1, shift=100)
    _set_times(store, a1, shift=100)
    store.prune(older_than=50)
    assert store.pruned_through("a") == last_a1 and store.pruned_through("b") == last_b1
    assert store.pruned_marks() == {"a": last_a1, "b": last_b1}
    assert store.pruned_through("nobody") == 0
    assert len(store.events_after(last_a1, principal="a")) == 4 and a2 in _ids(store, "a")
    # A client that saw a1's first event only must reload; one that saw all of a1 need not.
    head = store.head("a")
    assert plan_resume(first_a, head, store.pruned_through("a")).reload
    assert not plan_resume(last_a1, head, store.pruned_through("a")).reload
    store.prune(keep=0)
    assert store.pruned_through("a") == head and store.pruned_through("b") == last_b1
    assert floor_b < last_b1


def test_events_of_cleared_tasks_go_by_age(store):
    tid = _finished(store)
    assert store.delete_task(tid, "a").id == tid
    assert store.get_task(tid) is None and _ids(store) == set()
    assert len(store.events_after(0, task_id=tid)) == 4  # the ledger entry went, not its log
    assert store.prune(older_than=50) == PruneResult()
    assert len(store.events_after(0, task_id=tid)) == 4  # not old enough
    _set_times(store, tid, finished_at=time.time() - 100)
    done = store.prune(older_than=50)
    assert (done.tasks, done.events) == (0, 4)
    assert store.events_after(0, principal="a") == []
    assert store.pruned_through("a") == store.head("a")


def test_a_running_task_is_never_deleted(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    assert store.delete_task(rec.id, "a") == rec
    assert store.get_task(rec.id) == rec
    store.request_cancel(rec.id, "a")
    store.delete_task(rec.id, "a")
    again, ev = store.create_task(principal="a", name="x", args={}, idempotency_key="k")
    assert again.id != rec.id and ev is not None  # the key went with the task


# ---------------------------------------------------------------------------------- search


def _found(store, text, principal="me", **kw):
    return [r.id for r in store.list_tasks(principal, query=parse(text), **kw)]


def test_search_matches_what_the_index_would(store):
    rec, _ = store.create_task(principal="me", name="files.checksum",
                               args={"path": "/home/u/sales-2026.csv"})  # fmt: skip
    assert _found(store, "sales") == [rec.id]
    assert _found(store, "checksum") == [rec.id]
    assert _found(store, rec.id[:6]) == [rec.id]
    assert _found(store, "sal report") == []
    store.claim(rec.id, "w", 60)
    store.progress(rec.id, 1, 0.5, "hashing quarterly")
    assert _found(store, "quarterly") == [rec.id]
    store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"digest": "beefcafe", "files": 3})
    assert _found(store, "beefcafe") == [rec.id]
    failed, _ = store.create_task(principal="me", name="process.run", args={"program": "x"})
    store.claim(failed.id, "w", 60)
    store.finish(
        failed.id,
        1,
        TaskState.FAILED,
        error={"code": "exit_status", "message": "Quota exceeded on volume"},
    )
    assert _found(store, "quota volume") == [failed.id]
    assert _found(store, '"volume quota"') == []
    assert _found(store, "quota", principal="other") == []
    assert _found(store, "quota", states=[TaskState.SUCCEEDED]) == []


def test_pages_names_and_times(store):
    ids, times = [], []
    for i in range(7):
        rec, _ = store.create_task(principal="me", name="a" if i % 2 else "b",
                                   args={"word": "common"})  # fmt: skip
        store.create_task(principal="other", name="a", args={"word": "common"})
        if i % 3:
            store.request_cancel(rec.id, "me")
        ids.append(rec.id)
        times.append(rec.created_at)
        time.sleep(0.002)
    newest_first = ids[::-1]
    page = store.list_tasks("me", query=parse("common"), limit=3)
    assert [r.id for r in page] == newest_first[:3]
    rest = store.list_tasks("me", query=parse("common"), limit=10, before=page[-1].pn)
    assert [r.id for r in rest] == newest_first[3:]
    assert _found(store, "common", name="a") == [ids[5], ids[3], ids[1]]
    since, until = times[2], times[5]
    assert _found(store, "common", since=since, until=until) == [ids[4], ids[3], ids[2]]
    assert [r.id for r in store.list_tasks("me", since=since, until=until, before=rest[0].pn,
                                           limit=1)] == [ids[2]]  # fmt: skip
    assert store.list_tasks("me", until=times[0]) == []
    assert store.list_tasks("me", since=times[-1] + 1) == []


# -------------------------------------------------------------------------------- activity

T0 = 1_800_000_000.0


def _ran(store, name, state, started, ended, principal="a"):
    rec, _ = store.create_task(principal=principal, name=name, args={})
    if started is None:
        store.request_cancel(rec.id, principal)
    else:
        store.claim(rec.id, "w", 30)
        store.finish(rec.id, 1, state, error={"code": "x", "message": "no"}, reason="cancelled")
    _set_times(store, rec.id, started_at=started, finished_at=ended)
    return rec.id


def test_activity_counts_each_outcome_where_it_finished(store):
    s, f, c = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED
    _ran(store, "x", s, T0 - 5, T0 + 1)
    _ran(store, "x", s, T0 + 30, T0 + 59.9)
    _ran(store, "x", f, T0 + 50, T0 + 60)
    _ran(store, "y", c, None, T0 + 125)
    _ran(store, "y", s, T0 + 170, T0 + 179)
    _ran(store, "x", s, T0 - 10, T0 - 0.5)
    _ran(store, "x", s, T0 + 170, T0 + 180)
    _ran(store, "secret", s, T0, T0 + 1, principal="b")
    act = store.activity("a", T0, T0 + 180, 60)
    assert [b.counts for b in act.buckets] == [
        {"succeeded": 2, "failed": 0, "cancelled": 0},
        {"succeeded": 0, "failed": 1, "cancelled": 0},
        {"succeeded": 1, "failed": 0, "cancelled": 1},
    ]
    by_name = {t.name: t for t in act.tasks}
    assert [t.name for t in act.tasks] == ["x", "y"]
    assert by_name["y"].n == 2 and by_name["y"].timed == 1
    assert by_name["y"].p50 == by_name["y"].p95 == pytest.approx(9)
    assert (by_name["x"].p50, by_name["x"].max) == pytest.approx((10, 29.9))
    with pytest.raises(ValueError):
        store.activity("a", T0, T0, 60)


# ------------------------------------------------------------------------- Redis's own


def test_a_flushed_dataset_never_numbers_events_again_from_below_a_cursor(store):
    """Fill, lose everything (FLUSHALL: a restart without persistence), write again: the
    new counter starts above every seq shown before, and the watermark makes a resume from
    an old cursor an explicit reset, never a silent gap."""
    for _ in range(5):
        _lifecycle(store, "a")
    old_head = store.head("a")
    old_cursor = old_head - 7  # a client that had not seen the last events
    first_epoch = store.epoch("a")
    store._r.flushall()
    assert store.head("a") == 0 and store.pruned_through("a") == 0
    _, events = _lifecycle(store, "a")
    new_floor = store.pruned_through("a")
    assert events[0].seq == new_floor + 1 and new_floor > old_head
    assert store.epoch("a") > first_epoch
    for cursor in (1, old_cursor, old_head):
        plan = plan_resume(cursor, store.head("a"), store.pruned_through("a"))
        assert plan.reload and plan.after == cursor  # told to reload, then replayed
    assert store.events_after(old_head, principal="a") == events
    # Cursor 0 ("seen nothing") replays what exists.
    assert store.events_after(0, principal="a") == events


def test_a_lost_counter_starts_after_the_log_it_finds(store):
    """Only the principal's counters went (an evicted or deleted key): the next seq comes
    after the log's last id, whatever the clock says."""
    _, events = _lifecycle(store, "a")
    store._r.xadd(store._key("log", "a"), {"t": "x", "y": "queued", "ts": "0", "a": "0",
                                            "d": "{}"}, id=f"{5 * 10**15}-0")  # fmt: skip
    store._r.delete(store._key("p", "a"))
    _, later = _lifecycle(store, "a")
    assert later[0].seq == 5 * 10**15 + 1 and store.pruned_through("a") == 5 * 10**15


def test_a_server_restarted_without_persistence_is_a_reset(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        s = RedisTaskStore(server.url)
        _, events = _lifecycle(s, "a")
        cursor = events[1].seq
        server.restart()
        s.close()
        s = RedisTaskStore(server.url)  # a worker or web node started again
        assert s.head("a") == 0
        rec, ev = s.create_task(principal="a", name="x", args={})
        assert plan_resume(cursor, s.head("a"), s.pruned_through("a")).reload
        assert ev.seq > events[-1].seq and s.events_after(cursor, principal="a") == [ev]
        s.close()


def test_an_aof_restart_keeps_every_accepted_write(tmp_path):
    server = RedisServer(tmp_path / "redis", aof=True)
    with server:
        s = RedisTaskStore(server.url)
        done, events = _lifecycle(s, "a")
        queued, qev = s.create_task(principal="a", name="x", args={}, idempotency_key="k")
        server.kill()  # SIGKILL: appendfsync always had every reply's write on disk
        server.start()
        s.close()
        s = RedisTaskStore(server.url)
        assert s.get_task(done).state is TaskState.SUCCEEDED
        assert s.events_after(0, principal="a") == [*events, qev]
        assert s.queued_ids() == [queued.id]
        assert s.create_task(principal="a", name="x", args={}, idempotency_key="k")[1] is None
        _, more = _lifecycle(s, "a")
        assert more[0].seq == qev.seq + 1  # the counter survived: no reset
        assert s.pruned_through("a") == events[0].seq - 1
        s.close()


def test_two_reapers_never_both_requeue_a_task(redis_url):
    """Workers on two hosts reap the same expired leases at once: each task is re-queued
    once, with one retrying event (at-least-once, never twice by reaping)."""
    stores = [RedisTaskStore(redis_url) for _ in range(4)]
    ids = [stores[0].create_task(principal="a", name="x", args={})[0].id for _ in range(100)]
    for tid in ids:
        stores[0].claim(tid, "otherhost:1:gone", 0.05)
    time.sleep(0.1)
    results: list[list] = [[] for _ in stores]
    barrier = threading.Barrier(len(stores))

    def reap(i):
        barrier.wait()
        results[i] = stores[i].reap(live_worker=f"host{i}:1:me")[0]

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requeued = sorted(r.id for got in results for r in got)
    assert requeued == sorted(ids)
    assert sorted(stores[0].queued_ids()) == sorted(ids)
    for tid in ids[:10]:
        types = [e.type for e in stores[0].events_after(0, task_id=tid)]
        assert types == [EventType.QUEUED, EventType.STARTED, EventType.RETRYING]
    for s in stores:
        s.close()


def test_a_late_finish_after_a_reap_is_discarded(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "otherhost:1:slow", 0.05)
    time.sleep(0.1)
    assert store.reap()[0][0].id == rec.id
    assert store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1) is None
    assert store.progress(rec.id, 1, 0.5, None) is None and store.output(rec.id, 1, ["x"]) is None
    assert store.get_task(rec.id).state is TaskState.QUEUED


def test_pruning_trims_the_streams(store):
    for _ in range(20):
        _finished(store)
    log, r = store._key("log", "a"), store._r
    assert r.xlen(log) == 80
    store.prune(keep=5)
    assert r.xlen(log) == 20
    kept = [e.task_id for e in store.events_after(0, principal="a")]
    assert len(set(kept)) == 5
    left = list(r.scan_iter(store._key("te", "*")))  # each task's index of its seqs
    assert len(left) == 5 and all(r.llen(k) == 5 for k in left)  # its principal, 4 seqs
    # A list of numbers, not a stream per task (a stream's first node alone is ~4 KB).
    assert all(r.memory_usage(k) < 300 for k in left)
    assert r.zcard(store._key("done")) == 5 and r.zcard(store._key("fin")) == 5


def test_scripts_are_loaded_again_after_a_script_flush(store):
    store.create_task(principal="a", name="x", args={})
    store._r.script_flush()  # a restarted or failed-over server has no scripts cached
    rec, ev = store.create_task(principal="a", name="x", args={})
    assert ev is not None and store.get_task(rec.id) == rec


def test_a_namespace_keeps_two_heralds_apart(redis_url):
    one, two = RedisTaskStore(redis_url), RedisTaskStore(redis_url, namespace="other")
    rec, _ = one.create_task(principal="a", name="x", args={})
    assert two.get_task(rec.id) is None and two.list_tasks("a") == [] and two.head("a") == 0
    assert two.queued_ids() == [] and one.queued_ids() == [rec.id]
    one.close()
    two.close()


def test_sizes_say_the_memory_used(store):
    assert store.sizes()["used_memory"] > 0
    with pytest.raises(redis.ConnectionError):
        RedisTaskStore("redis://127.0.0.1:1/0").head("a")


def test_a_list_of_active_tasks_reads_only_them(store):
    """Queued and running tasks have their own index: listing them costs what they are,
    not the principal's whole history (counted in the server's own command statistics)."""
    for _ in range(300):
        _finished(store)
    queued, _ = store.create_task(principal="a", name="x", args={})
    running, _ = store.create_task(principal="a", name="x", args={})
    store.claim(running.id, "w", 30)
    store._r.config_resetstat()
    got = store.list_tasks("a", states=[TaskState.RUNNING, TaskState.QUEUED])
    assert [r.id for r in got] == [running.id, queued.id]
    assert store._r.info("commandstats")["cmdstat_hgetall"]["calls"] == 2
    assert [r.id for r in store.list_tasks("a", states=[TaskState.RUNNING])] == [running.id]
    store.finish(running.id, 1, TaskState.SUCCEEDED, result=1)
    store.request_cancel(queued.id, "a")
    assert store.list_tasks("a", states=[TaskState.RUNNING, TaskState.QUEUED]) == []
    assert len(store.list_tasks("a", states=[TaskState.SUCCEEDED], limit=500)) == 301


def test_a_tasks_events_resume_after_any_seq(store):
    """The per-task index is searched for the first seq after the cursor: every cursor,
    including seqs of another task interleaved with it, resumes exactly."""
    one, _ = store.create_task(principal="a", name="x", args={})
    two, _ = store.create_task(principal="a", name="x", args={})
    store.claim(one.id, "w", 30)
    store.claim(two.id, "w", 30)
    for i in range(150):
        store.output(one.id, 1, [f"one {i}"])
        store.output(two.id, 1, [f"two {i}"])
    log = store.events_after(0, principal="a", limit=10_000)
    mine = [e for e in log if e.task_id == one.id]
    assert len(mine) == 152
    for after in [0, log[0].seq, log[1].seq, mine[40].seq, mine[40].seq + 1, log[-1].seq,
                  log[-1].seq + 5]:  # fmt: skip
        want = [e for e in mine if e.seq > after]
        assert store.events_after(after, task_id=one.id, limit=10_000) == want
        assert store.events_after(after, task_id=one.id, limit=7) == want[:7]
