"""GET /api/activity: the caller's finished tasks per bucket and outcome, and durations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from services.core.states import TaskState


async def run_to_end(api: Any, state: TaskState, task: str = "test.echo",
                     token: str = "default") -> str:  # fmt: skip
    """Submit through the API, then run it to `state` as the worker would."""
    resp = await api.submit(task, {"text": "hi"} if task == "test.echo" else {}, token=token)
    assert resp.status == 202, resp.body
    task_id = resp.body["id"]
    if state is TaskState.CANCELLED:  # before it started
        assert (await api.call("POST", f"/api/tasks/{task_id}/cancel", token=token)).status == 202
        return task_id
    api.store.claim(task_id, "w", 30)
    if state is TaskState.FAILED:
        api.store.finish(task_id, 1, state, error={"code": "boom", "message": "no"})
    else:
        api.store.finish(task_id, 1, state, result="hi")
    return task_id


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def test_the_last_hour_by_minute_and_outcome(api: Any) -> None:
    for state in (TaskState.SUCCEEDED, TaskState.SUCCEEDED, TaskState.FAILED,
                  TaskState.CANCELLED):  # fmt: skip
        await run_to_end(api, state)
    await run_to_end(api, TaskState.SUCCEEDED, "test.noop")
    await run_to_end(api, TaskState.FAILED, "test.noop", token=api.other_token)  # bob's
    await api.submit("test.echo", {"text": "waiting"})  # queued: not finished
    resp = await api.call("GET", "/api/activity")
    assert resp.status == 200, resp.body
    body = resp.body
    assert (body["window"], body["bucket"]) == ("hour", 60)
    assert body["outcomes"] == ["succeeded", "failed", "cancelled"]
    assert len(body["buckets"]) == 60
    assert when(body["end"]) - when(body["start"]) == 3600
    assert when(body["buckets"][1]["start"]) - when(body["buckets"][0]["start"]) == 60
    assert body["totals"] == {"succeeded": 3, "failed": 1, "cancelled": 1}
    # Every count lies in the current (last) minute, or the one before if it just turned.
    recent = body["buckets"][-2:]
    assert sum(b["succeeded"] + b["failed"] + b["cancelled"] for b in recent) == 5
    echo, noop = body["tasks"]  # the busiest first
    assert echo == {"task": "test.echo", "n": 4, "succeeded": 2, "failed": 1, "cancelled": 1,
                    "timed": 3, "p50": echo["p50"], "p95": echo["p95"], "max": echo["max"]}
    assert 0 <= echo["p50"] <= echo["p95"] <= echo["max"] < 60
    assert noop["task"] == "test.noop" and noop["n"] == 1

    bob = (await api.call("GET", "/api/activity", token=api.other_token)).body
    assert bob["totals"] == {"succeeded": 0, "failed": 1, "cancelled": 0}
    assert [t["task"] for t in bob["tasks"]] == ["test.noop"]


async def test_a_day_in_hours_or_quarters_on_the_local_clock(api: Any) -> None:
    await run_to_end(api, TaskState.SUCCEEDED)
    day = (await api.call("GET", "/api/activity?window=day")).body
    assert (day["bucket"], len(day["buckets"]), day["totals"]["succeeded"]) == (3600, 24, 1)
    assert when(day["end"]) % 3600 == 0
    quarters = (await api.call("GET", "/api/activity?window=day&bucket=900")).body
    assert len(quarters["buckets"]) == 96
    # In UTC+5:30 an hour's bucket starts at :30 UTC.
    india = (await api.call("GET", "/api/activity?window=day&tz_offset=330")).body
    assert when(india["end"]) % 3600 == 1800 and india["totals"]["succeeded"] == 1
    west = (await api.call("GET", "/api/activity?window=hour&tz_offset=-570")).body
    assert when(west["end"]) % 60 == 0


async def test_nothing_finished_is_zero_buckets_and_no_types(api: Any) -> None:
    body = (await api.call("GET", "/api/activity?window=hour&bucket=300")).body
    assert len(body["buckets"]) == 12 and body["tasks"] == []
    assert body["totals"] == {"succeeded": 0, "failed": 0, "cancelled": 0}


@pytest.mark.parametrize("query, field", [
    ("window=week", "window"),
    ("window=", "window"),
    ("bucket=61", "bucket"),
    ("bucket=-60", "bucket"),
    ("bucket=1e3", "bucket"),
    ("tz_offset=841", "tz_offset"),
    ("tz_offset=--5", "tz_offset"),
    ("tz_offset=", "tz_offset"),
    ("tz_offset=%EF%BC%91", "tz_offset"),  # a fullwidth digit
])  # fmt: skip
async def test_bad_parameters_are_400_with_the_field(api: Any, query: str, field: str) -> None:
    resp = await api.call("GET", "/api/activity?" + query)
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "bad_request"
    assert field in resp.body["error"]["fields"]


async def test_it_needs_a_token(api: Any) -> None:
    assert (await api.call("GET", "/api/activity")).status == 200
    resp = await api.call("GET", "/api/activity", token=None)
    assert resp.status == 401 and resp.body["error"]["code"] == "unauthorized"
