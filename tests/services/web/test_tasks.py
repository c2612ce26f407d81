"""Reading and cancelling tasks: lists and pages, one task, its events, ownership."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from services.core.envelope import decode_server_message
from services.core.events import EventType
from services.core.states import TaskState


async def submit_many(api: Any, n: int, **kw: Any) -> list[str]:
    ids = []
    for i in range(n):
        resp = await api.submit("test.echo", {"text": f"t{i}"}, **kw)
        assert resp.status == 202
        ids.append(resp.body["id"])
    return ids


async def test_list_is_newest_first_and_pages_with_next(api: Any) -> None:
    ids = await submit_many(api, 5)
    resp = await api.call("GET", "/api/tasks?limit=2")
    assert resp.status == 200
    seen = [t["id"] for t in resp.body["tasks"]]
    pages = 1
    while resp.body["next"]:
        assert resp.body["next"].startswith("/api/tasks?")
        resp = await api.call("GET", resp.body["next"])
        seen += [t["id"] for t in resp.body["tasks"]]
        pages += 1
    assert seen == ids[::-1]
    assert pages == 3


async def test_list_default_limit_and_exact_page(api: Any) -> None:
    ids = await submit_many(api, 3)
    resp = await api.call("GET", "/api/tasks")
    assert [t["id"] for t in resp.body["tasks"]] == ids[::-1]
    assert resp.body["next"] is None
    resp = await api.call("GET", "/api/tasks?limit=3")
    assert resp.body["next"] is None  # exactly a page: no empty page to fetch


async def test_list_filters_by_state(api: Any) -> None:
    a, b, c = await submit_many(api, 3)
    await api.call("POST", f"/api/tasks/{b}/cancel")
    api.store.claim(c, "test-worker", 60)
    cancelled = await api.call("GET", "/api/tasks?state=cancelled")
    assert [t["id"] for t in cancelled.body["tasks"]] == [b]
    both = await api.call("GET", "/api/tasks?state=queued,running")
    assert [t["id"] for t in both.body["tasks"]] == [c, a]
    repeated = await api.call("GET", "/api/tasks?state=queued&state=cancelled")
    assert [t["id"] for t in repeated.body["tasks"]] == [b, a]
    paged = await api.call("GET", "/api/tasks?state=queued,cancelled&limit=1")
    assert paged.body["next"] is not None and "state=queued,cancelled" in paged.body["next"]
    rest = await api.call("GET", paged.body["next"])
    assert [t["id"] for t in rest.body["tasks"]] == [a]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=bogus", "state"),
        ("state=queued,nope", "state"),
        ("state=", "state"),
        ("state=queued,", "state"),
        ("before=4611686018427387905", "before"),
        ("after=4611686018427387905", "after"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("before=x", "before"),
        ("before=", "before"),
    ],
)
async def test_list_bad_query_is_400_with_field(api: Any, query: str, field: str) -> None:
    path = "/api/tasks/x/events" if query.startswith("after") else "/api/tasks"
    if path != "/api/tasks":
        (tid,) = await submit_many(api, 1)
        path = f"/api/tasks/{tid}/events"
    resp = await api.call("GET", f"{path}?{query}")
    assert resp.status == 400
    assert resp.body["error"]["code"] == "bad_request"
    assert field in resp.body["error"]["fields"]


async def test_the_largest_cursor_is_taken(api: Any) -> None:
    """The OpenAPI document's maximum (2^62) is accepted, as it says."""
    (tid,) = await submit_many(api, 1)
    listed = await api.call("GET", "/api/tasks?before=4611686018427387904")
    assert listed.status == 200 and [t["id"] for t in listed.body["tasks"]] == [tid]
    events = await api.call("GET", f"/api/tasks/{tid}/events?after=4611686018427387904")
    assert events.status == 200 and events.body["events"] == []


async def test_get_task(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    resp = await api.call("GET", f"/api/tasks/{tid}")
    assert resp.status == 200
    assert resp.body["id"] == tid and resp.body["state"] == "queued"
    missing = await api.call("GET", "/api/tasks/0123456789abcdef")
    assert missing.status == 404
    assert missing.body["error"]["code"] == "not_found"


async def test_events_are_the_websocket_envelope(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    await submit_many(api, 1)  # another task's events are not in this timeline
    api.store.claim(tid, "test-worker", 60)
    api.store.progress(tid, 1, 0.5, "half")
    resp = await api.call("GET", f"/api/tasks/{tid}/events")
    assert resp.status == 200
    assert resp.body["task"] == tid and resp.body["next"] is None
    events = resp.body["events"]
    assert [e["event"] for e in events] == ["queued", "started", "progress"]
    # The same objects the notifier sends: the shared codec decodes them.
    decoded = [decode_server_message(json.dumps(e)).event for e in events]
    assert [d.type for d in decoded] == [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS]
    assert decoded[2].data == {"fraction": 0.5, "message": "half"}
    assert decoded[1].attempt == 1
    after = await api.call("GET", f"/api/tasks/{tid}/events?after={events[0]['seq']}")
    assert [e["seq"] for e in after.body["events"]] == [e["seq"] for e in events[1:]]
    page = await api.call("GET", f"/api/tasks/{tid}/events?limit=2")
    assert len(page.body["events"]) == 2
    rest = await api.call("GET", page.body["next"])
    assert [e["event"] for e in rest.body["events"]] == ["progress"]
    bad = await api.call("GET", f"/api/tasks/{tid}/events?after=-3")
    assert bad.status == 400 and "after" in bad.body["error"]["fields"]


async def test_cancel_queued_task(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    await api.woken(api.notifier_rx)
    api.worker_rx.wait(5)
    resp = await api.call("POST", f"/api/tasks/{tid}/cancel")
    assert resp.status == 202
    assert resp.body["state"] == "cancelled"
    assert resp.body["finished_at"] is not None
    assert api.store.get_task(tid).state is TaskState.CANCELLED
    assert api.store.events_after(0, task_id=tid)[-1].type is EventType.CANCELLED
    assert await api.woken(api.notifier_rx) == [b"!"]


async def test_cancel_running_task_asks_the_worker(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    api.worker_rx.wait(5)
    await api.woken(api.notifier_rx)
    rec, _ = api.store.claim(tid, "test-worker", 60)
    assert rec.state is TaskState.RUNNING
    resp = await api.call("POST", f"/api/tasks/{tid}/cancel")
    assert resp.status == 202
    assert resp.body["state"] == "running"
    assert resp.body["cancel_requested"] is True
    assert api.store.events_after(0, task_id=tid)[-1].type is EventType.CANCEL_REQUESTED
    assert api.worker_rx.wait(5) == [b"cancel"]
    assert await api.woken(api.notifier_rx) == [b"!"]
    again = await api.call("POST", f"/api/tasks/{tid}/cancel")  # harmless, no new event
    assert again.status == 202 and again.body["cancel_requested"] is True
    types = [e.type for e in api.store.events_after(0, task_id=tid)]
    assert types.count(EventType.CANCEL_REQUESTED) == 1


async def test_cancel_finished_task_is_409_with_the_task(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    api.store.claim(tid, "test-worker", 60)
    api.store.finish(tid, 1, TaskState.SUCCEEDED, result="done")
    resp = await api.call("POST", f"/api/tasks/{tid}/cancel")
    assert resp.status == 409
    assert resp.body["error"]["code"] == "already_finished"
    assert resp.body["task"]["state"] == "succeeded"
    assert resp.body["task"]["result"] == "done"
    assert api.store.events_after(0, task_id=tid)[-1].type is EventType.SUCCEEDED


async def test_other_principal_sees_nothing_of_mine(api: Any) -> None:
    (tid,) = await submit_many(api, 1)
    bob = api.other_token
    for method, path in [
        ("GET", f"/api/tasks/{tid}"),
        ("GET", f"/api/tasks/{tid}/events"),
        ("POST", f"/api/tasks/{tid}/cancel"),
    ]:
        resp = await api.call(method, path, token=bob)
        assert resp.status == 404, (method, path)
        # The same answer as for a task that does not exist.
        assert resp.body == {"error": {"code": "not_found", "message": "No such task."}}
    listed = await api.call("GET", "/api/tasks", token=bob)
    assert listed.body == {"tasks": [], "next": None}
    assert api.store.get_task(tid).state is TaskState.QUEUED
    mine = await api.submit("test.noop", token=bob)
    assert mine.status == 202
    assert api.store.get_task(mine.body["id"]).principal == "bob"
    listed = await api.call("GET", "/api/tasks", token=bob)
    assert [t["id"] for t in listed.body["tasks"]] == [mine.body["id"]]
    own = await api.call("GET", "/api/tasks")
    assert [t["id"] for t in own.body["tasks"]] == [tid]


async def test_catalog_lists_every_task(api: Any) -> None:
    resp = await api.call("GET", "/api/catalog")
    assert resp.status == 200
    names = [t["name"] for t in resp.body["tasks"]]
    assert names == ["test.echo", "test.noop", "test.pick"]
    echo = resp.body["tasks"][0]
    assert echo["title"] == "Echo"
    assert [p["name"] for p in echo["params"]] == ["text", "count", "loud"]


async def test_delete_forgets_only_finished_tasks_of_the_caller(api: Any) -> None:
    """DELETE /api/tasks/{id}: 204 for a finished task, 409 while active, 404 for others."""
    queued = (await api.submit("test.noop")).body
    active = await api.call("DELETE", f"/api/tasks/{queued['id']}")
    assert active.status == 409 and active.body["error"]["code"] == "task_active"
    await api.call("POST", f"/api/tasks/{queued['id']}/cancel")
    other = await api.call("DELETE", f"/api/tasks/{queued['id']}", token=api.other_token)
    assert other.status == 404
    gone = await api.call("DELETE", f"/api/tasks/{queued['id']}")
    assert gone.status == 204
    assert (await api.call("GET", f"/api/tasks/{queued['id']}")).status == 404


async def test_search_and_filters_over_the_history(api: Any) -> None:
    a = (await api.submit("test.echo", {"text": "quarterly sales"})).body
    b = (await api.submit("test.pick", {"colour": "red"})).body
    c = (await api.submit("test.echo", {"text": "salt"})).body
    mine = (await api.call("GET", "/api/tasks?q=sal")).body  # the last word: a prefix
    assert [t["id"] for t in mine["tasks"]] == [c["id"], a["id"]]
    whole = await api.call("GET", "/api/tasks?q=" + quote("sales "))  # finished word
    assert [t["id"] for t in whole.body["tasks"]] == [a["id"]]
    assert [t["id"] for t in (await api.call("GET", "/api/tasks?q=red")).body["tasks"]] == [
        b["id"]]
    named = await api.call("GET", "/api/tasks?task=test.echo&q=sal&limit=1")
    assert [t["id"] for t in named.body["tasks"]] == [c["id"]]
    assert "q=sal" in named.body["next"] and "task=test.echo" in named.body["next"]
    rest = await api.call("GET", named.body["next"])
    assert [t["id"] for t in rest.body["tasks"]] == [a["id"]] and rest.body["next"] is None
    since = quote(b["created_at"])
    assert [t["id"] for t in (await api.call(
        "GET", f"/api/tasks?since={since}")).body["tasks"]] == [c["id"], b["id"]]
    assert [t["id"] for t in (await api.call(
        "GET", f"/api/tasks?until={since}&q=sal")).body["tasks"]] == [a["id"]]
    assert (await api.call("GET", "/api/tasks?since=2000-01-01")).body["tasks"][-1]["id"] == \
        a["id"]  # a date alone is midnight UTC
    await api.call("POST", f"/api/tasks/{c['id']}/cancel")
    done = await api.call("GET", "/api/tasks?q=sal&state=cancelled")
    assert [t["id"] for t in done.body["tasks"]] == [c["id"]]
    theirs = await api.call("GET", "/api/tasks?q=sal", token=api.other_token)
    assert theirs.status == 200 and theirs.body["tasks"] == []  # never another's


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("q=" + quote('"unbalanced'), "q"),
        ("q=" + "x" * 201, "q"),
        ("q=a&q=b", "q"),
        ("q=" + quote("a\x00b"), "q"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=" + "9" * 70, "since"),
        ("task=" + "t" * 201, "task"),
    ],
)
async def test_bad_search_is_400_with_a_clear_error(api: Any, query: str, field: str) -> None:
    await submit_many(api, 1)
    resp = await api.call("GET", f"/api/tasks?{query}")
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "bad_request"
    assert field in resp.body["error"]["fields"] and resp.body["error"]["message"]


async def test_search_words_that_look_like_syntax_are_just_words(api: Any) -> None:
    """FTS5 operators and punctuation in q are searched for, never run as syntax."""
    (tid,) = await submit_many(api, 1)
    for text in ("*", "a * b", "NOT", "t0 OR x", "NEAR(t0)", "t0 -x", "col:t0", "^t0", "(",
                 "/", "t0 AND"):  # fmt: skip
        resp = await api.call("GET", "/api/tasks?q=" + quote(text))
        assert resp.status == 200, (text, resp.body)
    assert [t["id"] for t in (await api.call("GET", "/api/tasks?q=%2F")).body["tasks"]] == [tid]
    # "OR" is a word like any other: the task has t0 but neither "or" nor "zzz".
    assert (await api.call("GET", "/api/tasks?q=t0%20OR%20zzz")).body["tasks"] == []
    assert [t["id"] for t in (await api.call("GET", "/api/tasks?q=T0")).body["tasks"]] == [tid]
