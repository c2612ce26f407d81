"""The ledger's web side on every backend: submitting (with idempotency), reading one task,
by id prefix and by list (pages, filters, search), cancelling and deleting; each principal
sees its own tasks only."""

from __future__ import annotations

import time

from services.core.events import EventType
from services.core.search import parse
from services.core.states import TaskState
from tests.contract.checks import assert_ledger_agrees_with_log, origin, run_to_the_end


def test_create_records_the_task_and_its_queued_event(store):
    rec, ev = store.create_task(principal="a", name="demo.answer", args={"seconds": 0},
                                max_attempts=3, max_lost=2, timeout=5.5)  # fmt: skip
    assert (rec.state, rec.attempt, rec.principal, rec.name) == (
        TaskState.QUEUED,
        0,
        "a",
        "demo.answer",
    )
    assert rec.args == {"seconds": 0} and rec.progress is None and rec.result is None
    assert (rec.max_attempts, rec.max_lost, rec.timeout) == (3, 2, 5.5)
    assert (rec.failures, rec.lost, rec.uncharged, rec.cancel_requested) == (0, 0, 0, False)
    assert rec.lease_owner is None and rec.started_at is None and rec.finished_at is None
    assert rec.pn == 1 and rec.shown_max_attempts == 3 and rec.retries_left == 2
    assert ev.type is EventType.QUEUED and (ev.task_id, ev.principal) == (rec.id, "a")
    assert ev.seq == origin(store, "a") + 1 == store.head("a")  # its first
    assert ev.data == {"name": "demo.answer", "args": {"seconds": 0}, "max_attempts": 3,
                       "timeout": 5.5}  # fmt: skip
    assert ev.attempt == 0
    assert store.get_task(rec.id) == rec  # what it returned is what the ledger holds
    assert store.events_after(0, principal="a") == [ev]  # ... and the log
    plain, ev2 = store.create_task(principal="a", name="x", args={})
    assert plain.timeout is None and "timeout" not in ev2.data
    assert (plain.max_attempts, plain.max_lost) == (1, 3)  # the defaults
    assert_ledger_agrees_with_log(store, "a")


def test_ids_are_lowercase_hex_and_distinct(store):
    ids = {store.create_task(principal="a", name="x", args={})[0].id for _ in range(20)}
    assert len(ids) == 20
    assert all(i and set(i) <= set("0123456789abcdef") for i in ids)


def test_an_idempotency_key_returns_the_same_task_per_principal(store):
    first, ev1 = store.create_task(principal="a", name="x", args={"v": 1}, idempotency_key="k")
    again, ev2 = store.create_task(principal="a", name="x", args={"v": 2}, idempotency_key="k")
    other, ev3 = store.create_task(principal="b", name="x", args={}, idempotency_key="k")
    assert again == first and ev2 is None  # the first one, unchanged, and no new event
    assert first.idempotency_key == "k"
    assert other.id != first.id and ev3 is not None
    assert store.head("a") == ev1.seq and store.head("b") == ev3.seq
    assert len(store.list_tasks("a")) == 1
    fresh, ev4 = store.create_task(principal="a", name="x", args={}, idempotency_key="k2")
    assert fresh.id != first.id and ev4.seq == ev1.seq + 1
    # A finished task still holds its key.
    store.request_cancel(first.id, "a")
    assert store.create_task(principal="a", name="x", args={}, idempotency_key="k")[0].id == (
        first.id
    )
    assert_ledger_agrees_with_log(store, "a")


def test_get_task_is_the_owners_only(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    assert store.get_task(rec.id, principal="a") == rec == store.get_task(rec.id)
    assert store.get_task(rec.id, principal="b") is None
    assert store.get_task("0" * 32) is None
    assert store.task_name(rec.id) == "x" and store.task_name("0" * 32) is None


def test_another_instance_sees_every_write(store, make_store):
    other = make_store()
    rec, _ = store.create_task(principal="a", name="x", args={})
    assert other.get_task(rec.id) == rec
    other.claim(rec.id, "w", 60)
    assert store.get_task(rec.id).state is TaskState.RUNNING
    assert [e.type for e in store.events_after(0, principal="a")] == [
        EventType.QUEUED,
        EventType.STARTED,
    ]


def test_ids_by_prefix(store):
    mine = sorted(store.create_task(principal="a", name="x", args={})[0].id for _ in range(40))
    theirs = [store.create_task(principal="b", name="x", args={})[0].id for _ in range(40)]
    first = mine[0]
    assert store.tasks_by_id_prefix(first, "a") == [first]
    assert store.tasks_by_id_prefix(first, "b") == []
    one_char = first[0]
    expected = [i for i in mine if i.startswith(one_char)]
    assert store.tasks_by_id_prefix(one_char, "a", limit=100) == expected
    assert store.tasks_by_id_prefix(one_char, "a", limit=1) == expected[:1]
    for prefix in ("", first.upper(), "xyz", first[:4] + "-", " "):
        assert store.tasks_by_id_prefix(prefix, "a") == [], prefix
    assert set(store.tasks_by_id_prefix(theirs[0][:3], "b")) >= {theirs[0]}


def test_the_list_is_newest_first_and_pages_by_the_principals_own_numbers(store):
    ids = []
    for _ in range(5):
        ids.append(store.create_task(principal="a", name="x", args={})[0].id)
        store.create_task(principal="b", name="x", args={})
    page1 = store.list_tasks("a", limit=2)
    page2 = store.list_tasks("a", limit=2, before=page1[-1].pn)
    page3 = store.list_tasks("a", limit=2, before=page2[-1].pn)
    assert [t.id for t in page1 + page2 + page3] == ids[::-1]
    assert [t.pn for t in page1 + page2 + page3] == [5, 4, 3, 2, 1]
    assert store.list_tasks("a", before=1) == []
    assert [t.pn for t in store.list_tasks("b")] == [5, 4, 3, 2, 1]
    assert store.list_tasks("nobody") == []


def test_the_list_filters_by_state_and_name(store):
    queued, _ = store.create_task(principal="a", name="one", args={})
    running, _ = store.create_task(principal="a", name="two", args={})
    store.claim(running.id, "w", 60)
    done, _ = run_to_the_end(store, "a", name="one")
    failed, _ = run_to_the_end(store, "a", name="two", state=TaskState.FAILED)

    def ids(**kw):
        return [t.id for t in store.list_tasks("a", **kw)]

    assert ids(states=[TaskState.QUEUED]) == [queued.id]
    assert ids(states=[TaskState.RUNNING, TaskState.FAILED]) == [failed, running.id]
    assert ids(states=[TaskState.SUCCEEDED], name="two") == []
    assert ids(name="one") == [done, queued.id]
    assert ids(name="one", limit=1) == [done]
    assert ids(name="three") == []


def test_the_list_filters_by_submit_time(store):
    ids, times = [], []
    for _ in range(6):
        rec, _ = store.create_task(principal="a", name="x", args={})
        store.create_task(principal="b", name="x", args={})
        ids.append(rec.id)
        times.append(rec.created_at)
        time.sleep(0.003)  # distinct submit times
    assert times == sorted(times) and len(set(times)) == 6

    def ids_of(**kw):
        return [t.id for t in store.list_tasks("a", **kw)]

    assert ids_of(since=times[2], until=times[5]) == [ids[4], ids[3], ids[2]]  # [since, until)
    assert ids_of(since=times[2], until=times[5], limit=2) == [ids[4], ids[3]]
    page = store.list_tasks("a", since=times[2], until=times[5], limit=2)
    assert ids_of(since=times[2], until=times[5], before=page[-1].pn) == [ids[2]]
    assert ids_of(since=times[4]) == [ids[5], ids[4]]
    assert ids_of(until=times[1]) == [ids[0]]
    assert ids_of(until=times[0]) == []
    assert ids_of(since=times[-1] + 1) == []


def test_search_finds_queued_running_and_finished_tasks_of_the_principal(store):
    queued, _ = store.create_task(principal="a", name="files.checksum",
                                  args={"path": "/home/u/sales-2026.csv"})  # fmt: skip
    running, _ = store.create_task(principal="a", name="process.run", args={"program": "x"})
    store.claim(running.id, "w", 60)
    store.progress(running.id, 1, 0.5, "hashing quarterly")
    done, _ = store.create_task(principal="a", name="report.build", args={"title": "sales"})
    store.claim(done.id, "w", 60)
    store.finish(done.id, 1, TaskState.SUCCEEDED, result={"digest": "beefcafe"})
    failed, _ = store.create_task(principal="a", name="process.run", args={"program": "y"})
    store.claim(failed.id, "w", 60)
    store.finish(
        failed.id,
        1,
        TaskState.FAILED,
        error={"code": "exit_status", "message": "Quota exceeded on volume"},
    )
    store.create_task(principal="b", name="files.checksum", args={"path": "sales"})

    def found(text, principal="a", **kw):
        return [t.id for t in store.list_tasks(principal, query=parse(text), **kw)]

    assert found("sales") == [done.id, queued.id]  # newest first, a's only
    assert found("checksum") == [queued.id]  # the name
    assert found(queued.id[:6]) == [queued.id]  # an id prefix
    assert found("sal") == [done.id, queued.id]  # the last word is a prefix
    assert found("sales rep") == [done.id]  # every word, the last a prefix
    assert found("sal rep") == []  # only the last word is a prefix
    assert found("quarterly") == [running.id]  # a running task's message
    assert found("beefcafe") == [done.id]  # a result
    assert found("quota volume") == [failed.id]  # a failure's message
    assert found('"volume quota"') == []  # a phrase keeps its order
    assert found("sales", states=[TaskState.QUEUED]) == [queued.id]
    assert found("run", name="process.run", limit=1) == [failed.id]
    assert found("sales", principal="nobody") == []
    store.delete_task(done.id, "a")
    assert found("sales") == [queued.id]


def test_cancelling_a_queued_task_ends_it_at_once(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    after, ev = store.request_cancel(rec.id, "a")
    assert after.state is TaskState.CANCELLED and after.cancel_requested
    assert after.message == "Cancelled before it started" and after.finished_at is not None
    assert ev.type is EventType.CANCELLED and ev.data == {"reason": "cancelled before it started"}
    assert store.get_task(rec.id) == after
    assert store.claim(rec.id, "w", 60) == (None, None)  # the worker skips it
    assert store.request_cancel(rec.id, "a") == (after, None)  # nothing more to do
    assert rec.id not in store.queued_ids()
    assert_ledger_agrees_with_log(store, "a")


def test_cancelling_a_running_task_asks_its_worker_once(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    store.claim(rec.id, "w", 60)
    after, ev = store.request_cancel(rec.id, "a")
    assert after.state is TaskState.RUNNING and after.cancel_requested
    assert ev.type is EventType.CANCEL_REQUESTED and ev.attempt == 1
    assert store.cancel_requested("w") == {rec.id} and store.cancel_requested("w2") == set()
    assert store.request_cancel(rec.id, "a")[1] is None  # asked once
    end = store.finish(rec.id, 1, TaskState.CANCELLED, reason="cancelled")
    assert end.type is EventType.CANCELLED
    assert store.cancel_requested("w") == set()
    assert store.request_cancel(rec.id, "a")[1] is None  # finished: nothing
    assert_ledger_agrees_with_log(store, "a")


def test_only_the_owner_cancels_or_deletes(store):
    rec, _ = store.create_task(principal="a", name="x", args={})
    assert store.request_cancel(rec.id, "b") == (None, None)
    assert store.request_cancel("0" * 32, "a") == (None, None)
    assert store.delete_task(rec.id, "b") is None
    assert store.get_task(rec.id).state is TaskState.QUEUED
    assert store.events_after(0, principal="b") == [] and store.head("b") == 0


def test_delete_forgets_a_finished_task_and_keeps_its_events(store):
    done, events = run_to_the_end(store, "a")
    queued, _ = store.create_task(principal="a", name="x", args={})
    assert store.delete_task(queued.id, "a") == queued  # not finished: kept
    assert store.get_task(queued.id) == queued
    before = store.get_task(done)
    assert store.delete_task(done, "a") == before
    assert store.get_task(done) is None and store.task_name(done) is None
    assert [t.id for t in store.list_tasks("a")] == [queued.id]
    assert store.events_after(0, task_id=done) == events  # the log keeps them
    assert store.delete_task(done, "a") is None
    assert store.head("a") == events[-1].seq + 1  # a deletion appends no event
