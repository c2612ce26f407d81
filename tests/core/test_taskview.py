"""The client-side task view: events applied to task dicts agree with the ledger."""

from datetime import datetime

import pytest

from services.core import taskview as tv
from services.core.events import Event, EventType
from services.core.states import TaskState
from services.store import TaskStore
from services.web.app import task_json

# Keys whose values the events do not carry (the API knows them from the ledger).
NOT_FROM_EVENTS = {"max_attempts", "seq"}


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def ev(seq, etype, ts=100.0, attempt=0, /, **data):
    return Event(seq, "t1", "", etype, ts, attempt, data)


def follow(events):
    """The dict a client builds from nothing but these events."""
    task = None
    for e in events:
        task = tv.apply_event(task, e)
    return task


def api(store, task_id):
    return task_json(store.get_task(task_id))


def same_view(from_events, from_api):
    keys = (from_api.keys() | from_events.keys()) - NOT_FROM_EVENTS
    return {k: from_events.get(k) for k in keys} == {k: from_api.get(k) for k in keys}


def test_queued_event_creates_the_task_with_the_api_keys(store):
    rec, queued = store.create_task(principal="a", name="demo.answer", args={"seconds": 1})
    task = tv.apply_event(None, queued)
    assert task["seq"] == queued.seq
    assert task.keys() - {"seq"} == api(store, rec.id).keys()
    assert same_view(task, api(store, rec.id))


def test_a_succeeding_task_seen_through_its_events_matches_the_ledger(store):
    rec, e1 = store.create_task(principal="a", name="demo.answer", args={})
    _, e2 = store.claim(rec.id, "w", 30)
    e3 = store.progress(rec.id, 1, 0.5, "half way")
    task = follow([e1, e2, e3])
    assert task["state"] == "running" and task["progress"] == 0.5
    assert task["message"] == "half way" and task["attempt"] == 1
    assert same_view(task, api(store, rec.id))
    e4 = store.output(rec.id, 1, ["a line"])
    _, e5 = store.request_cancel(rec.id, "a")
    task = follow([e1, e2, e3, e4, e5])
    assert task["cancel_requested"] is True
    assert same_view(task, api(store, rec.id))
    e6 = store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"answer": 42})
    task = follow([e1, e2, e3, e4, e5, e6])
    assert task["state"] == "succeeded" and task["progress"] == 1.0
    assert task["result"] == {"answer": 42} and task["finished_at"] is not None
    assert same_view(task, api(store, rec.id))


def test_failed_cancelled_and_retried_tasks_match_the_ledger(store):
    failing, f1 = store.create_task(principal="a", name="x", args={})
    _, f2 = store.claim(failing.id, "w", 30)
    f3 = store.finish(failing.id, 1, TaskState.FAILED, error={"code": "boom", "message": "Boom"})
    task = follow([f1, f2, f3])
    assert task["state"] == "failed" and task["message"] == "Boom"
    assert task["error"] == {"code": "boom", "message": "Boom"}
    assert same_view(task, api(store, failing.id))

    queued, c1 = store.create_task(principal="a", name="x", args={})
    _, c2 = store.request_cancel(queued.id, "a")
    task = follow([c1, c2])
    assert task["state"] == "cancelled" and task["cancel_requested"] is True
    assert same_view(task, api(store, queued.id))

    retried, r1 = store.create_task(principal="a", name="x", args={}, max_lost=2)
    _, r2 = store.claim(retried.id, "w", 30)
    _, (r3,) = store.reap(release="w")
    task = follow([r1, r2, r3])
    assert task["state"] == "queued" and task["message"] == "Worker stopped; will run again"
    assert task["max_attempts"] == 2  # the stopped attempt is not held against it
    assert same_view(task, api(store, retried.id))
    _, r4 = store.claim(retried.id, "w", 30)
    r5 = store.finish(retried.id, 2, TaskState.CANCELLED, reason="stop")
    task = follow([r1, r2, r3, r4, r5])
    assert task["state"] == "cancelled" and task["attempt"] == 2
    assert same_view(task, api(store, retried.id))


def test_retries_after_failures_and_losses_match_the_ledger(store):
    rec, e1 = store.create_task(principal="a", name="x", args={}, max_attempts=3, timeout=9)
    _, e2 = store.claim(rec.id, "w", 30)
    e3 = store.retry_later(rec.id, 1, delay=30, error={"code": "busy", "message": "Busy"})
    task = follow([e1, e2, e3])
    assert task["state"] == "queued" and task["message"] == "Will retry: Busy"
    assert task["next_attempt_at"] is not None and task["error"]["code"] == "busy"
    assert task["timeout"] == 9
    assert same_view(task, api(store, rec.id))
    store._conn.execute("UPDATE tasks SET next_attempt_at = 0 WHERE id = ?", (rec.id,))
    _, e4 = store.claim(rec.id, "w", 30)
    _, e5 = store.lose(rec.id, 2, detail="killed by SIGKILL")
    task = follow([e1, e2, e3, e4, e5])
    assert task["message"] == "Worker lost; retrying" and task["next_attempt_at"] is None
    assert (task["lost_attempts"], task["max_attempts"]) == (1, 4)
    assert same_view(task, api(store, rec.id))
    _, e6 = store.claim(rec.id, "w", 30)
    task = follow([e1, e2, e3, e4, e5, e6])
    assert task["error"] is None and task["attempt"] == 3
    assert same_view(task, api(store, rec.id))


def test_a_forced_cancel_reads_the_same_from_events_and_the_ledger(store):
    rec, e1 = store.create_task(principal="a", name="x", args={})
    _, e2 = store.claim(rec.id, "w", 30)
    e3 = store.finish(rec.id, 1, TaskState.CANCELLED, reason="stopped by force after 5 s",
                      extra={"forced": True, "grace": 5})  # fmt: skip
    task = follow([e1, e2, e3])
    assert task["message"] == "Stopped by force after 5 s"
    assert same_view(task, api(store, rec.id))


def test_duplicates_and_old_events_are_ignored():
    task = follow([ev(1, EventType.QUEUED, name="x", args={}),
                   ev(2, EventType.STARTED, 100.0, 1, attempt=1)])  # fmt: skip
    later = tv.apply_event(task, ev(5, EventType.PROGRESS, 101.0, 1, fraction=0.5, message="m"))
    assert later["seq"] == 5 and later is not task
    for old in (ev(5, EventType.PROGRESS, 101.0, 1, fraction=0.9, message="dup"),
                ev(3, EventType.PROGRESS, 100.5, 1, fraction=0.1, message="old")):  # fmt: skip
        assert tv.apply_event(later, old) is later
    assert later["progress"] == 0.5


def test_a_finished_task_never_changes_again():
    task = follow([ev(1, EventType.QUEUED, name="x", args={}),
                   ev(2, EventType.STARTED, 100.0, 1, attempt=1),
                   ev(3, EventType.SUCCEEDED, 100.0, 1, result=42)])  # fmt: skip
    assert tv.apply_event(task, ev(9, EventType.FAILED, 100.0, 1, error={})) is task
    assert task["state"] == "succeeded" and task["result"] == 42


def test_events_for_an_unknown_task_need_a_fetch():
    assert tv.apply_event(None, ev(4, EventType.PROGRESS, fraction=0.1, message="")) is None


def test_a_snapshot_takes_events_recorded_after_it(store):
    rec, e1 = store.create_task(principal="a", name="x", args={"n": 1})
    _, e2 = store.claim(rec.id, "w", 30)
    e3 = store.progress(rec.id, 1, 0.25, "quarter")
    snap = tv.merge_snapshot(None, api(store, rec.id))
    assert snap["seq"] is None
    # A replay from the start must not take the snapshot back in time.
    assert follow_from(snap, [e1, e2]) is snap
    again = tv.apply_event(snap, e3)  # the very write the snapshot shows: harmless
    assert again["progress"] == 0.25 and again["seq"] == e3.seq
    e4 = store.progress(rec.id, 1, 0.75, "three quarters")
    assert tv.apply_event(snap, e4)["progress"] == 0.75


def follow_from(task, events):
    for e in events:
        task = tv.apply_event(task, e)
    return task


def test_a_finished_snapshot_ignores_every_event(store):
    rec, e1 = store.create_task(principal="a", name="x", args={})
    _, e2 = store.claim(rec.id, "w", 30)
    e3 = store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1)
    snap = tv.merge_snapshot(None, api(store, rec.id))
    assert follow_from(snap, [e1, e2, e3]) is snap


def test_merge_snapshot_keeps_the_newer_view():
    events = follow([ev(1, EventType.QUEUED, 100.0, name="x", args={}),
                     ev(2, EventType.STARTED, 101.0, 1, attempt=1)])  # fmt: skip
    older = dict(events, updated_at=tv.iso(100.0), state="queued", max_attempts=3, seq=None)
    kept = tv.merge_snapshot(events, older)
    assert kept["state"] == "running" and kept["seq"] == 2
    assert kept["max_attempts"] == 3  # filled in: events never carry it
    newer = dict(events, updated_at=tv.iso(102.0), progress=0.5, max_attempts=3)
    taken = tv.merge_snapshot(events, newer)
    assert taken["progress"] == 0.5 and taken["seq"] is None
    finished = dict(events, state="succeeded", updated_at=tv.iso(100.0))
    assert tv.merge_snapshot(events, finished)["state"] == "succeeded"
    done = tv.apply_event(events, ev(3, EventType.SUCCEEDED, 103.0, 1, result=1))
    assert tv.merge_snapshot(done, dict(newer, updated_at=tv.iso(200.0)))["state"] == "succeeded"


def test_iso_matches_the_api_and_parses_back():
    assert tv.iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert tv.iso(None) is None
    assert tv.parse_time("2026-11-27T15:25:36.123456+00:00") == pytest.approx(1795793136.123456)
    assert tv.parse_time(tv.iso(1795793136.5)) == 1795793136.5
    assert tv.parse_time(None) is None and tv.parse_time("yesterday") is None


def test_is_terminal():
    assert [tv.is_terminal(s) for s in TaskState] == [False, False, True, True, True]
    assert tv.is_terminal("failed") and not tv.is_terminal(None)


def test_duration():
    task = {"state": "running", "started_at": tv.iso(100.0), "finished_at": None}
    assert tv.duration(task, now=101.5) == 1.5
    assert tv.duration(dict(task, state="succeeded", finished_at=tv.iso(160.0))) == 60.0
    assert tv.duration(dict(task, state="queued")) is None  # waiting for a retry
    assert tv.duration({"state": "queued", "started_at": None}) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (0.04, "0.0 s"), (1.23, "1.2 s"), (42.9, "42 s"), (184, "3 min 4 s"),
     (7500, "2 h 5 min")],  # fmt: skip
)
def test_format_duration(seconds, text):
    assert tv.format_duration(seconds) == text


def test_format_submitted_shows_the_time_today_and_the_date_otherwise():
    when = datetime(2026, 11, 27, 15, 25, 36).astimezone()
    stamp = tv.iso(when.timestamp())
    assert tv.format_submitted(stamp, now=when.timestamp() + 60) == "15:25:36"
    assert tv.format_submitted(stamp, now=when.timestamp() + 3 * 86400) == "2026-11-27 15:25"
    assert tv.format_submitted(None) == ""


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (None, ""),
        (42, "42"),
        (True, "true"),
        ("done\nmore", "done …"),
        ({"path": "/x/y.zip", "files": 3}, "y.zip"),
        ({"path": "C:\\out\\folder\\"}, "folder"),
        ({"exit_code": 0, "lines": 3}, '{"exit_code": 0, "lines": 3}'),
    ],
)
def test_summarize_result(result, text):
    assert tv.summarize_result(result) == text


def test_summarize_result_width():
    assert len(tv.summarize_result("x" * 500, width=20)) == 20
    long = tv.summarize_result(list(range(100)))
    assert len(long) == 40 and long.startswith("[0, 1, 2, ") and long.endswith("…")
    assert tv.shorten("abc", 3) == "abc" and tv.shorten("abcd", 3) == "ab…"


def test_a_snapshot_waiting_for_a_retry_takes_the_next_attempt(store):
    rec, _ = store.create_task(principal="a", name="x", args={}, max_attempts=2)
    _, started = store.claim(rec.id, "w", 30)
    _, (retrying,) = store.reap(release="w")
    snap = tv.merge_snapshot(None, api(store, rec.id))
    assert tv.apply_event(snap, started) is snap
    assert tv.apply_event(snap, retrying) is snap  # the attempt it shows was lost already
    _, again = store.claim(rec.id, "w", 30)
    task = tv.apply_event(snap, again)
    assert (task["state"], task["attempt"], task["progress"]) == ("running", 2, None)
    assert same_view(task, api(store, rec.id))
