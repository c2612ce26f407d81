"""The ledger's worker side on every backend: claims (once, within a per-name limit),
progress, output and the end of an attempt, leases and their renewal, retries, lost
attempts and the reaper, and what the dispatcher asks of the queue."""

from __future__ import annotations

import time

from services.core.events import EventType
from services.core.states import TaskState
from services.core.taskview import cancelled_message
from tests.contract.checks import assert_ledger_agrees_with_log, dead_owner

OTHER_HOST = "otherhost:1:x"  # a lease owner on another host: alive as far as we can tell


def test_a_full_attempt(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, timeout=9)
    claimed, started = store.claim(rec.id, "w", 30)
    assert claimed.state is TaskState.RUNNING and claimed.attempt == 1
    assert claimed.lease_owner == "w" and claimed.lease_until > time.time() + 20
    assert claimed.started_at is not None
    assert started.type is EventType.STARTED and started.data == {"attempt": 1, "timeout": 9}
    assert store.get_task(rec.id) == claimed
    assert store.claim(rec.id, "w2", 30) == (None, None)  # only once
    assert store.leased_to("w") == [(rec.id, 1)] and store.leased_to("w2") == []
    progress = store.progress(rec.id, 1, 0.5, "half")
    assert progress.type is EventType.PROGRESS
    assert progress.data == {"fraction": 0.5, "message": "half"}
    mid = store.get_task(rec.id)
    assert (mid.progress, mid.message) == (0.5, "half")
    output = store.output(rec.id, 1, ["line 1", "line 2"])
    assert output.type is EventType.OUTPUT and output.data == {"lines": ["line 1", "line 2"]}
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"answer": 42})
    assert done.type is EventType.SUCCEEDED and done.data == {"result": {"answer": 42}}
    final = store.get_task(rec.id)
    assert (final.state, final.result, final.progress) == (TaskState.SUCCEEDED, {"answer": 42}, 1)
    assert final.lease_owner is None and final.lease_until is None
    assert final.finished_at is not None and store.leased_to("w") == []
    assert store.events_after(0, task_id=rec.id) == [
        store.events_after(0, principal="a")[0],
        started,
        progress,
        output,
        done,
    ]
    assert store.finish(rec.id, 1, TaskState.FAILED, error={}) is None  # terminal stays
    assert store.progress(rec.id, 1, 0.9, "late") is None
    assert store.output(rec.id, 1, ["late"]) is None
    assert store.get_task(rec.id) == final
    assert_ledger_agrees_with_log(store, "a")


def test_writes_of_an_attempt_that_is_not_current_change_nothing(store):
    rec, queued = store.create_task(principal="a", name="x", args={})
    assert store.progress(rec.id, 0, 0.1, "not started") is None
    assert store.output(rec.id, 1, ["not started"]) is None
    assert store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1) is None
    store.claim(rec.id, "w", 30)
    assert store.progress(rec.id, 2, 0.1, "a later attempt") is None
    assert store.finish(rec.id, 2, TaskState.SUCCEEDED, result=1) is None
    assert store.retry_later(rec.id, 2, delay=0, error={"code": "e", "message": "m"}) is None
    assert store.lose(rec.id, 2) == (None, None)
    assert store.progress("0" * 32, 1, 0.1, "unknown") is None
    assert store.head("a") == queued.seq + 1 and store.get_task(rec.id).progress is None
    assert_ledger_agrees_with_log(store, "a")


def test_failed_and_cancelled_ends(store):
    failed, _ = store.create_task(principal="a", name="x", args={})
    store.claim(failed.id, "w", 30)
    error = {"code": "exit_status", "message": "exit 3", "traceback": "..."}
    ev = store.finish(failed.id, 1, TaskState.FAILED, error=error)
    assert ev.type is EventType.FAILED and ev.data == {"error": error}
    rec = store.get_task(failed.id)
    assert (rec.state, rec.error, rec.message, rec.result) == (
        TaskState.FAILED,
        error,
        "exit 3",
        None,
    )

    cancelled, _ = store.create_task(principal="a", name="x", args={})
    store.claim(cancelled.id, "w", 30)
    ev = store.finish(cancelled.id, 1, TaskState.CANCELLED, reason="timed_out",
                      extra={"forced": True, "limit": 30})  # fmt: skip
    assert ev.type is EventType.CANCELLED
    assert ev.data == {"reason": "timed_out", "forced": True, "limit": 30}
    rec = store.get_task(cancelled.id)
    assert rec.state is TaskState.CANCELLED and rec.message == cancelled_message(ev.data)
    assert_ledger_agrees_with_log(store, "a")


def test_a_claim_respects_a_limit_per_name_across_workers(store, make_store):
    other = make_store()  # another worker's instance
    first, _ = store.create_task(principal="a", name="one.at.a.time", args={})
    second, b_queued = store.create_task(principal="b", name="one.at.a.time", args={})
    unrelated, _ = store.create_task(principal="a", name="other", args={})
    assert store.claim(first.id, "w1", 30, limit=1)[0] is not None
    assert other.claim(second.id, "w2", 30, limit=1) == (None, None)
    assert other.get_task(second.id).state is TaskState.QUEUED  # a refused claim is no write
    assert other.claim(unrelated.id, "w2", 30, limit=1)[0] is not None  # per name
    store.finish(first.id, 1, TaskState.SUCCEEDED, result=None)
    assert other.claim(second.id, "w2", 30, limit=1)[0] is not None
    assert store.head("b") == b_queued.seq + 1  # the refused claim appended nothing
    third, _ = store.create_task(principal="a", name="one.at.a.time", args={})
    assert store.claim(third.id, "w1", 30, limit=2)[0] is not None  # two may run
    assert_ledger_agrees_with_log(store, "a")
    assert_ledger_agrees_with_log(store, "b")


def test_a_failure_waits_for_its_retry(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=3)
    claimed, _ = store.claim(rec.id, "w", 30)
    assert claimed.retries_left == 2
    ev = store.retry_later(rec.id, 1, delay=0.3, error={"code": "e", "message": "boom"})
    assert ev.type is EventType.RETRYING and ev.attempt == 1
    assert ev.data["reason"] == "failed" and ev.data["delay"] == 0.3
    assert ev.data["next_attempt"] == 2 and ev.data["max_attempts"] == 3
    assert ev.data["error"] == {"code": "e", "message": "boom"} and ev.data["lost_attempts"] == 0
    waiting = store.get_task(rec.id)
    assert waiting.state is TaskState.QUEUED and waiting.failures == 1
    assert waiting.error == {"code": "e", "message": "boom"}
    assert waiting.message == "Will retry: boom"
    assert waiting.next_attempt_at == ev.data["at"] and waiting.lease_owner is None
    assert store.claim(rec.id, "w", 30) == (None, None)  # not before its time
    assert rec.id not in store.queued_ids()  # nor found as a lost queue message
    assert store.next_retries() == [(rec.id, ev.data["at"])]
    time.sleep(max(0.0, ev.data["at"] - time.time()) + 0.02)
    again, started = store.claim(rec.id, "w", 30)
    assert again.attempt == 2 and again.error is None and again.next_attempt_at is None
    assert started.data["attempt"] == 2
    assert again.retries_left == 1 and store.next_retries() == []
    # Stale writes of the earlier attempt change nothing.
    assert store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "x"}) is None
    requested = store.retry_later(rec.id, 2, delay=0, error={"code": "e", "message": "again"},
                                  requested=True)  # fmt: skip
    assert requested.data["reason"] == "requested"
    assert_ledger_agrees_with_log(store, "a")


def test_losses_and_failures_are_counted_apart(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2, max_lost=3)
    store.claim(rec.id, "w", 30)
    store.retry_later(rec.id, 1, delay=0, error={"code": "e", "message": "m"})
    store.claim(rec.id, "w", 30)
    before, ev = store.lose(rec.id, 2, detail="killed by SIGSEGV")
    assert before.attempt == 2 and before.state is TaskState.RUNNING  # as it was
    assert ev.type is EventType.RETRYING and ev.data["reason"] == "worker_lost"
    assert ev.data["detail"] == "killed by SIGSEGV" and ev.data["lost_attempts"] == 1
    assert ev.data["max_attempts"] == 3  # the lost attempt is not held against it
    assert ev.data["delay"] == 0 and ev.data["next_attempt"] == 3
    assert rec.id in store.queued_ids()  # at once
    store.claim(rec.id, "w", 30)
    _, ev = store.lose(rec.id, 3, stopped=True)  # a clean stop: not lost
    assert ev.data["reason"] == "worker_stopped" and ev.data["lost_attempts"] == 1
    third = store.get_task(rec.id)
    assert (third.failures, third.lost, third.uncharged, third.shown_max_attempts) == (1, 1, 2, 4)
    assert third.retries_left == 0 and third.state is TaskState.QUEUED
    assert store.lose(rec.id, 3) == (None, None)  # not running any more
    assert_ledger_agrees_with_log(store, "a")


def test_the_last_loss_fails_worker_lost_and_a_cancel_wins(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_lost=1)
    store.claim(rec.id, "w", 30)
    _, ev = store.lose(rec.id, 1, detail="killed")
    assert ev.type is EventType.FAILED and ev.data["error"]["code"] == "worker_lost"
    final = store.get_task(rec.id)
    assert final.state is TaskState.FAILED and final.error["code"] == "worker_lost"
    assert final.lease_owner is None and final.finished_at is not None

    asked, _ = store.create_task(principal="a", name="x", args={})
    store.claim(asked.id, "w", 30)
    store.request_cancel(asked.id, "a")
    _, ev = store.lose(asked.id, 1)
    assert ev.type is EventType.CANCELLED and store.get_task(asked.id).state is TaskState.CANCELLED
    assert_ledger_agrees_with_log(store, "a")


def test_reap_requeues_a_dead_owners_task_then_fails_it_worker_lost(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_lost=2)
    dead = dead_owner()
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [rec.id]
    assert len(events) == 1 and events[0].type is EventType.RETRYING
    assert events[0].data["reason"] == "worker_lost"
    assert store.get_task(rec.id).state is TaskState.QUEUED
    store.claim(rec.id, dead, 30)
    requeued, events = store.reap(live_worker="me")
    assert requeued == [] and events[0].type is EventType.FAILED
    final = store.get_task(rec.id)
    assert final.state is TaskState.FAILED and final.error["code"] == "worker_lost"
    assert (final.attempt, final.lost, final.failures) == (2, 2, 0)
    assert final.shown_max_attempts == 2  # the first loss added an attempt, the last did not
    assert store.reap(live_worker="me") == ([], [])
    assert_ledger_agrees_with_log(store, "a")


def test_reap_takes_expired_leases_unless_renewed(store):
    expired, _ = store.create_task(principal="a", name="x", args={})
    renewed, _ = store.create_task(principal="a", name="x", args={})
    live, _ = store.create_task(principal="a", name="x", args={})
    store.claim(expired.id, OTHER_HOST, -1)  # a lease already over
    store.claim(renewed.id, "otherhost:2:y", -1)
    store.claim(live.id, "otherhost:3:z", 60)
    store.renew_leases("otherhost:2:y", 60)
    assert store.get_task(renewed.id).lease_until > time.time() + 50
    store.renew_leases("otherhost:3:z", 60, task_ids=[])  # nothing
    requeued, events = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [expired.id]
    assert [e.task_id for e in events] == [expired.id]
    assert events[0].data["reason"] == "worker_lost"
    assert {store.get_task(t).state for t in (renewed.id, live.id)} == {TaskState.RUNNING}


def test_renewing_named_leases_only(store):
    one, _ = store.create_task(principal="a", name="x", args={})
    two, _ = store.create_task(principal="a", name="x", args={})
    store.claim(one.id, OTHER_HOST, -1)
    store.claim(two.id, OTHER_HOST, -1)
    store.renew_leases(OTHER_HOST, 60, task_ids=[one.id])
    requeued, _ = store.reap(live_worker="me")
    assert [r.id for r in requeued] == [two.id]
    store.renew_leases("someone-else", 60)  # another worker's renewal saves nothing of ours
    assert store.get_task(one.id).lease_owner == OTHER_HOST


def test_reap_leaves_live_leases_and_releases_on_request(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    mine, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, OTHER_HOST, 30)  # another host, lease still valid
    store.claim(mine.id, "me", -1)  # expired, but it is the reaper's own
    assert store.reap(live_worker="me") == ([], [])
    requeued, events = store.reap(release=OTHER_HOST)
    assert [r.id for r in requeued] == [rec.id]
    assert events[0].data["reason"] == "worker_stopped"
    assert store.get_task(rec.id).uncharged == 1 and store.get_task(rec.id).lost == 0
    assert store.get_task(mine.id).state is TaskState.RUNNING  # release takes only its own
    assert_ledger_agrees_with_log(store, "a")


def test_a_released_task_being_cancelled_is_cancelled(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, OTHER_HOST, 30)
    store.request_cancel(rec.id, "a")
    requeued, events = store.reap(release=OTHER_HOST)
    assert requeued == [] and events[0].type is EventType.CANCELLED
    assert_ledger_agrees_with_log(store, "a")


def test_queued_ids_are_the_runnable_oldest_first(store):
    ids = [store.create_task(principal=p, name="x", args={})[0].id for p in "abab"]
    store.claim(ids[1], "w", 30)
    assert store.queued_ids() == [ids[0], ids[2], ids[3]]
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    store.request_cancel(ids[2], "a")
    late, _ = store.create_task(principal="a", name="x", args={})
    assert store.queued_ids() == [ids[0], ids[3], late.id]
    assert store.queued_ids(unchanged_since=cut) == [ids[0], ids[3]]
    assert store.queued_ids(unchanged_since=0) == []


def test_next_retries_are_soonest_first(store):
    ids = []
    for delay in (30, 10, 20):
        rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2)
        store.claim(rec.id, "w", 30)
        ev = store.retry_later(rec.id, 1, delay=delay, error={"code": "e", "message": "m"})
        ids.append((rec.id, ev.data["at"]))
    assert store.next_retries() == sorted(ids, key=lambda p: p[1])
    assert store.next_retries(limit=1) == [ids[1]]
    store.request_cancel(ids[1][0], "a")  # a cancelled retry is no longer due
    assert [i for i, _ in store.next_retries()] == [ids[2][0], ids[0][0]]


def test_cancel_requested_is_per_worker(store):
    one, _ = store.create_task(principal="a", name="x", args={})
    two, _ = store.create_task(principal="b", name="x", args={})
    store.claim(one.id, "w1", 30)
    store.claim(two.id, "w2", 30)
    store.request_cancel(one.id, "a")
    store.request_cancel(two.id, "b")
    assert store.cancel_requested("w1") == {one.id}
    assert store.cancel_requested("w2") == {two.id}
    assert sorted(store.leased_to("w1") + store.leased_to("w2")) == sorted(
        [(one.id, 1), (two.id, 1)]
    )
