"""POST /api/tasks: the happy path, every rejected input, body limits and idempotency.

`api` is the conftest's running app (class `Api`); --import-mode=importlib keeps test
modules from importing the conftest, so it is typed `Any` here.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import pytest

from services.core.events import EventType
from services.core.states import TaskState

MAX_ATTEMPTS = 3  # the cap the conftest gives make_app
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, resp.body
    assert set(resp.body) == {"error"}, resp.body
    err = resp.body["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    return err


async def test_submit_records_enqueues_and_wakes(api: Any) -> None:
    resp = await api.submit("test.echo", {"text": "hi"})
    assert resp.status == 202
    task = resp.body
    assert resp.headers["Location"] == f"/api/tasks/{task['id']}"
    assert task["task"] == "test.echo"
    assert task["args"] == {"text": "hi", "count": 1, "loud": False}  # defaults filled in
    assert task["state"] == "queued"
    assert task["attempt"] == 0
    assert task["max_attempts"] == 3  # 1 + the spec's 2 retries
    assert api.store.get_task(task["id"]).max_lost == MAX_ATTEMPTS  # 5, capped by the config
    assert task["lost_attempts"] == 0 and task["next_attempt_at"] is None
    assert task["timeout"] == 30  # the task's default
    assert task["cancel_requested"] is False
    assert task["progress"] is None and task["result"] is None and task["error"] is None
    assert ISO.fullmatch(task["created_at"]) and ISO.fullmatch(task["updated_at"])
    assert task["started_at"] is None and task["finished_at"] is None
    assert task["links"] == {
        "self": f"/api/tasks/{task['id']}",
        "cancel": f"/api/tasks/{task['id']}/cancel",
        "events": f"/api/tasks/{task['id']}/events",
    }
    events = api.store.events_after(0)
    assert [(e.type, e.task_id, e.principal) for e in events] == [
        (EventType.QUEUED, task["id"], "local")
    ]
    assert api.queue.dequeue() == task["id"]
    assert api.queue.dequeue() is None
    assert api.worker_rx.wait(5) == [b"!" + task["id"].encode()]  # names the task
    assert await api.woken(api.notifier_rx) == [b"!"]  # a moment later


async def test_submit_without_args_and_with_a_smaller_max_attempts(api: Any) -> None:
    resp = await api.submit("test.noop")
    assert resp.status == 202
    assert resp.body["args"] == {} and resp.body["timeout"] is None
    assert resp.body["max_attempts"] == 1  # no retries
    resp = await api.submit("test.pick", {"colour": "red"})
    assert api.store.get_task(resp.body["id"]).max_lost == 1


async def test_submit_with_a_timeout(api: Any) -> None:
    resp = await api.call("POST", "/api/tasks", json_body={"task": "test.noop", "timeout": 2.5})
    assert resp.status == 202 and resp.body["timeout"] == 2.5
    assert api.store.get_task(resp.body["id"]).timeout == 2.5
    body = {"task": "test.echo", "args": {"text": "a"}, "timeout": 60}
    resp = await api.call("POST", "/api/tasks", json_body=body)
    assert resp.status == 202 and resp.body["timeout"] == 60  # its maximum


@pytest.mark.parametrize("timeout", [0, -1, "5", True, [1], {}, 61, 1e400, 2**4000])
async def test_a_bad_timeout_is_422_beside_the_field(api: Any, timeout: Any) -> None:
    body = json.dumps({"task": "test.echo", "args": {"text": "a"}, "timeout": timeout}) \
        if timeout != 1e400 else '{"task": "test.echo", "args": {"text": "a"}, "timeout": 1e400}'
    resp = await api.call("POST", "/api/tasks", data=body.encode(),
                          headers={"Content-Type": "application/json"})  # fmt: skip
    err = assert_error(resp, 422, "validation_failed")
    assert set(err["fields"]) == {"timeout"}


async def test_bad_args_and_a_bad_timeout_are_reported_together(api: Any) -> None:
    body = {"task": "test.echo", "args": {}, "timeout": 0}
    resp = await api.call("POST", "/api/tasks", json_body=body)
    err = assert_error(resp, 422, "validation_failed")
    assert set(err["fields"]) == {"text", "timeout"}


async def test_submit_without_content_type_is_415(api: Any) -> None:
    resp = await api.call(
        "POST", "/api/tasks", data=b'{"task": "test.noop"}', skip_auto_headers=("Content-Type",)
    )
    assert_error(resp, 415, "unsupported_media_type")
    assert api.store.events_after(0) == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.herald+json"]
)
async def test_submit_json_content_types(api: Any, content_type: str) -> None:
    resp = await api.call(
        "POST", "/api/tasks", data=b'{"task": "test.noop"}', headers={"Content-Type": content_type}
    )
    assert resp.status == 202


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_submit_other_content_type_is_415(api: Any, content_type: str) -> None:
    resp = await api.call(
        "POST", "/api/tasks", data=b'{"task": "test.noop"}', headers={"Content-Type": content_type}
    )
    assert_error(resp, 415, "unsupported_media_type")
    assert api.store.events_after(0) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"task": "test.noop"',
        b"[1, 2]",
        b'"test.noop"',
        b"null",
        b"{}",
        b'{"task": 3}',
        b'{"task": ""}',
        b'{"task": null}',
        b'{"args": {}}',
        b'{"task": "test.noop", "args": []}',
        b'{"task": "test.noop", "args": "x"}',
        b'{"task": "test.noop", "principal": "bob"}',
        b'{"task": "test.echo", "args": {"text": NaN}}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
async def test_submit_malformed_body_is_400(api: Any, raw: bytes) -> None:
    resp = await api.call(
        "POST", "/api/tasks", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 400, "bad_request")
    assert api.store.events_after(0) == []
    assert api.queue.dequeue() is None


async def test_extra_member_is_named_in_fields(api: Any) -> None:
    resp = await api.call("POST", "/api/tasks", json_body={"task": "test.noop", "owner": "x"})
    assert assert_error(resp, 400, "bad_request")["fields"] == {"owner": "unknown member"}


async def test_unknown_task_is_404(api: Any) -> None:
    resp = await api.submit("no.such.task", {})
    assert_error(resp, 404, "unknown_task")
    assert api.store.events_after(0) == []


@pytest.mark.parametrize(
    ("args", "fields"),
    [
        ({"text": 3}, {"text": "must be a string"}),
        ({"text": "x" * 21}, {"text": "must have at most 20 characters"}),
        ({"text": "a", "count": 0}, {"count": "must be at least 1"}),
        ({"text": "a", "count": 6}, {"count": "must be at most 5"}),
        ({"text": "a", "count": "2"}, {"count": "must be an integer"}),
        ({"text": "a", "loud": "yes"}, {"loud": "must be true or false"}),
        ({"text": "a", "colour": "red"}, {"colour": "unknown parameter"}),
        ({}, {"text": "is required"}),
        (
            {"count": 9, "bogus": 1},
            {"text": "is required", "count": "must be at most 5", "bogus": "unknown parameter"},
        ),
    ],
)
async def test_bad_args_are_422_with_fields(
    api: Any, args: dict[str, Any], fields: dict[str, str]
) -> None:
    resp = await api.submit("test.echo", args)
    assert resp.status == 422
    assert resp.body["error"]["code"] == "validation_failed"
    assert resp.body["error"]["fields"] == fields
    assert api.store.events_after(0) == []
    assert api.queue.dequeue() is None


async def test_body_over_one_mib_is_413(api: Any) -> None:
    filler = "x" * (1024**2 + 1 - len('{"task": "test.noop", "args": {"text": ""}}'))
    raw = ('{"task": "test.noop", "args": {"text": "' + filler + '"}}').encode()
    assert len(raw) == 1024**2 + 1
    # A BytesIO body: aiohttp sends its Content-Length (and warns about raw bytes this big).
    resp = await api.call(
        "POST", "/api/tasks", data=io.BytesIO(raw), headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 413, "too_large")
    assert api.store.events_after(0) == []


async def test_chunked_body_over_one_mib_is_413(api: Any) -> None:
    async def chunks():  # no Content-Length: aiohttp's client_max_size catches it
        yield b'{"task": "test.noop", "args": {"text": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}}'

    resp = await api.call(
        "POST", "/api/tasks", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 413, "too_large")
    assert api.store.events_after(0) == []


async def test_body_of_exactly_one_mib_is_read(api: Any) -> None:
    prefix, suffix = '{"task": "test.echo", "args": {"text": "', '"}}'
    raw = (prefix + "x" * (1024**2 - len(prefix) - len(suffix)) + suffix).encode()
    resp = await api.call(
        "POST", "/api/tasks", data=io.BytesIO(raw), headers={"Content-Type": "application/json"}
    )
    # Read and parsed in full: the text is then too long for the task.
    assert resp.status == 422
    assert resp.body["error"]["fields"] == {"text": "must have at most 20 characters"}


async def test_idempotency_key_replays_the_same_task(api: Any) -> None:
    first = await api.submit("test.echo", {"text": "once"}, headers={"Idempotency-Key": "k-1"})
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    again = await api.submit("test.echo", {"text": "once"}, headers={"Idempotency-Key": "k-1"})
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/api/tasks/{first.body['id']}"
    assert again.body["id"] == first.body["id"]
    assert len(api.store.list_tasks("local")) == 1
    assert [e.type for e in api.store.events_after(0)] == [EventType.QUEUED]
    assert api.queue.dequeue() == first.body["id"]
    assert api.queue.dequeue() is None  # not enqueued twice
    # Another principal's identical key is its own.
    other = await api.submit(
        "test.echo", {"text": "once"}, token=api.other_token, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status == 202
    assert other.body["id"] != first.body["id"]


async def test_idempotency_key_reused_for_another_submit_is_409(api: Any) -> None:
    await api.submit("test.echo", {"text": "one"}, headers={"Idempotency-Key": "k"})
    resp = await api.submit("test.echo", {"text": "two"}, headers={"Idempotency-Key": "k"})
    assert_error(resp, 409, "idempotency_conflict")
    assert len(api.store.list_tasks("local")) == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there"])
async def test_bad_idempotency_key_is_400(api: Any, key: str) -> None:
    headers = {"Idempotency-Key": key.encode("utf-8").decode("latin-1")}
    resp = await api.submit("test.noop", headers=headers)
    err = assert_error(resp, 400, "bad_request")
    assert "Idempotency-Key" in err["fields"]
    assert api.store.events_after(0) == []


async def test_longest_idempotency_key_is_fine(api: Any) -> None:
    resp = await api.submit("test.noop", headers={"Idempotency-Key": "~" * 200})
    assert resp.status == 202
    assert api.store.get_task(resp.body["id"]).state is TaskState.QUEUED


def queued_ids(api: Any) -> list[str]:
    """The task ids in the queue, in the order they will be dequeued."""
    return [str(t.args[0]) for t in api.queue.huey.pending()]


async def test_a_task_whose_message_the_queue_refuses_is_accepted_and_enqueued_later(
    api: Any,
) -> None:
    # SQLite's own "database or disk is full": the queue may not grow by a page.
    conn = api.queue.huey.storage.conn
    conn.execute("PRAGMA max_page_count = 1")  # (never below its size now)
    submitted: list[str] = []
    while len(queued_ids(api)) == len(submitted):
        assert len(submitted) < 2000, "the queue never filled up"
        resp = await api.submit("test.noop")
        assert resp.status == 202, resp.body  # in the ledger: accepted
        submitted.append(resp.body["id"])
    for _ in range(3):  # later ones wait behind it, even if they would fit
        resp = await api.submit("test.noop")
        assert resp.status == 202, resp.body
        submitted.append(resp.body["id"])
    health = (await api.call("GET", "/api/health")).body
    assert health["status"] == "disk_full" and health["detail"], health
    api.worker_rx.drain()

    conn.execute("PRAGMA max_page_count = 1073741823")  # room again
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(queued_ids(api)) < len(submitted):
        assert loop.time() < deadline, "the refused messages were never enqueued"
        await asyncio.sleep(0.02)
    assert queued_ids(api) == submitted  # in the order they were accepted
    assert b"!" in await api.woken(api.worker_rx)  # and the worker was told
