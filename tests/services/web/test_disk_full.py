"""The web service on a full disk (a small tmpfs, when the tests run as root): 507
`disk_full` instead of 500, nothing half recorded, health says so, reads go on.

`api` is the conftest's running app (class `Api`), here over a data dir on that disk;
it is typed `Any` (see test_submit.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.layout import DataLayout
from tests.disk import fill, integrity, small_disk


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[DataLayout]:
    """The conftest's data dir, on a 4 MB tmpfs."""
    with small_disk(tmp_path / "disk", "4m") as mount:
        yield DataLayout(mount / "data")


def queued_ids(api: Any) -> list[str]:
    """The task ids in the queue, in the order they will be dequeued."""
    return [str(t.args[0]) for t in api.queue.huey.pending()]


async def test_a_full_disk_is_507_and_nothing_half_recorded(api: Any) -> None:
    assert (await api.submit("test.noop")).status == 202
    filler = api.layout.root.parent / "filler"
    fill(filler)
    accepted, refused = [], 0
    for _ in range(40):
        resp = await api.submit("test.echo", {"text": "hi"})
        if resp.status == 202:  # room left in a WAL file, say
            accepted.append(resp.body["id"])
            continue
        assert resp.status == 507, resp.body
        assert resp.body["error"]["code"] == "disk_full", resp.body
        assert resp.body["error"]["message"]
        refused += 1
    assert refused, "the disk never filled up"
    health = await api.call("GET", "/api/health")
    assert health.status == 200
    assert health.body["status"] == "disk_full" and health.body["detail"], health.body
    listed = await api.call("GET", "/api/tasks?limit=200")
    assert listed.status == 200  # reads go on
    assert len(listed.body["tasks"]) == 1 + len(accepted)  # a 507 recorded nothing

    filler.unlink()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not set(queued_ids(api)) >= set(accepted):  # messages refused are enqueued later
        assert loop.time() < deadline, "an accepted task never reached the queue"
        await asyncio.sleep(0.02)
    assert (await api.submit("test.noop")).status == 202
    assert integrity(api.layout.ledger_db) == "ok"
    assert integrity(api.layout.queue_db) == "ok"
