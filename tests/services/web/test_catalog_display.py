"""GET /api/catalog serves each task's result display, so every client reads results alike."""

from __future__ import annotations

from typing import Any


async def test_the_catalog_serves_each_tasks_display(api: Any) -> None:
    resp = await api.call("GET", "/api/catalog")
    assert resp.status == 200
    tasks = {t["name"]: t for t in resp.body["tasks"]}
    assert tasks["test.noop"]["display"] == {
        "summary": ["{n:count:thing}"],
        "fields": [{"key": "n", "label": "N", "type": "count"}],
        "actions": [],
    }
    assert tasks["test.echo"]["display"] is None  # declared none: clients show its JSON
