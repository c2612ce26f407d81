"""GET /api/tasks/{id} takes a unique id prefix of 4 or more hex digits, like git: among
the caller's own tasks only, ambiguous ones answered with the candidates."""

from __future__ import annotations

import sqlite3
from typing import Any


def rename(api: Any, old: str, new: str) -> None:
    """Give a task a chosen id (uuid4 ids sharing a 4-digit prefix are left to chance)."""
    with sqlite3.connect(api.layout.ledger_db) as db:
        db.execute("UPDATE tasks SET id = ? WHERE id = ?", (new, old))
    db.close()


async def test_a_unique_prefix_finds_the_task(api: Any) -> None:
    tid = (await api.submit("test.noop")).body["id"]
    for prefix in (tid[:4], tid[:12].upper(), tid[:31]):
        resp = await api.call("GET", f"/api/tasks/{prefix}")
        assert resp.status == 200, (prefix, resp.body)
        assert resp.body["id"] == tid
    assert (await api.call("GET", f"/api/tasks/{tid}")).body["id"] == tid


async def test_shared_prefixes_short_ones_and_other_principals(api: Any) -> None:
    ids = [(await api.submit("test.noop")).body["id"] for _ in range(3)]
    mine = ["beef" + "0" * 27 + "1", "beef" + "0" * 27 + "2", "beef1" + "0" * 27]
    for old, new in zip(ids, mine, strict=True):
        rename(api, old, new)
    bobs = (await api.submit("test.noop", token=api.other_token)).body["id"]
    rename(api, bobs, "cafe" + "0" * 28)

    resp = await api.call("GET", "/api/tasks/beef0")
    assert resp.status == 409
    assert resp.body["error"]["code"] == "ambiguous_id"
    assert resp.body["candidates"] == mine[:2]
    assert mine[0] in resp.body["error"]["message"]
    assert (await api.call("GET", "/api/tasks/beef")).body["candidates"] == sorted(mine)
    assert (await api.call("GET", "/api/tasks/beef1")).body["id"] == mine[2]

    # Bob's task is not mine: the same answer as for no task at all, and bob finds his.
    nothing = await api.call("GET", "/api/tasks/cafe")
    assert nothing.status == 404 and nothing.body["error"]["code"] == "not_found"
    assert (await api.call("GET", "/api/tasks/beef", token=api.other_token)).status == 404
    assert (await api.call("GET", "/api/tasks/cafe", token=api.other_token)).status == 200

    short = await api.call("GET", "/api/tasks/bee")
    assert short.status == 400
    assert "at least 4 characters" in short.body["error"]["message"]
    assert (await api.call("GET", "/api/tasks/nothex")).status == 404
