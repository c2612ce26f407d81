"""A full disk, end to end: real `herald serve` with its data dir on a small tmpfs.

While the disk is full, a submit is answered 202 (recorded) or 507 `disk_full`, never
another 5xx, and health says `disk_full`; once space is back, every accepted task runs
to its end by itself (no service restarted), a client connected throughout gets each of
their events, and both databases pass an integrity check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.events import EventType
from tests.disk import fill, integrity, small_disk
from tests.e2e.harness import (
    Instance,
    collect_all_until_terminal,
    pid_alive,
    start_serve,
    wait_for,
)

SUBMITS = 60


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "20m") as mount:
        yield mount


@pytest.fixture
def full_disk_instance(disk: Path, tmp_path: Path) -> Iterator[Instance]:
    inst = start_serve(disk / "data", tmp_path / "runtime", "--concurrency", "2")
    try:
        yield inst
    finally:
        inst.stop()


def test_full_disk_answers_507_and_recovers_without_a_restart(full_disk_instance, disk):
    inst = full_disk_instance
    client = inst.client
    pids = {name: inst.service_pid(name) for name in ("web", "worker", "notifier")}
    stream = client.events()  # connected throughout: every event reaches it, in order
    stream.open()
    warm = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(warm["id"])["state"] == "succeeded")

    # Attempts that run while the disk fills up, and report (progress, outcome) while it
    # is full: none of it may be lost, nor any of them run twice.
    busy = [client.submit("demo.answer", {"seconds": 1})["id"] for _ in range(4)]
    wait_for(lambda: client.get(busy[0])["state"] == "running")
    filler = disk / "filler"
    fill(filler)
    statuses: list[int] = []
    accepted = [warm["id"], *busy]
    for _ in range(SUBMITS):
        status, body = client.request("POST", "/api/tasks",
                                      {"task": "demo.answer", "args": {"seconds": 0}})  # fmt: skip
        statuses.append(status)
        if status == 202:
            accepted.append(body["id"])
        elif status >= 500:
            assert status == 507, (status, body)
            assert body["error"]["code"] == "disk_full", body
    assert 507 in statuses, "the disk never filled up"
    health = client.health()
    assert health["status"] == "disk_full", health
    assert health["detail"]
    time.sleep(1.5)  # the busy attempts end while nothing can be recorded
    filler.unlink()

    def all_succeeded() -> bool:
        states = {t["id"]: t["state"] for t in client.iter_tasks()}
        return all(states.get(task_id) == "succeeded" for task_id in accepted)

    wait_for(all_succeeded, timeout=30, interval=0.2)
    by_task = collect_all_until_terminal(stream, accepted)
    for events in by_task.values():
        assert [e.type for e in events][:2] == [EventType.QUEUED, EventType.STARTED], events
        assert events[-1].type is EventType.SUCCEEDED
        assert [e.seq for e in events] == sorted(e.seq for e in events)
    stream.close()
    wait_for(lambda: client.health()["status"] == "ok", timeout=10, interval=0.2)
    # Nothing was restarted: the same processes serve, and the supervisor counted no exit.
    assert all(pid_alive(pid) for pid in pids.values())
    status = wait_for(lambda: inst.status() if all(
        s.get("pid") == pids[name] for name, s in inst.status().items()) else None)
    assert all(s["restarts"] == 0 for s in status.values()), status

    for task_id in busy:
        assert client.get(task_id)["attempt"] == 1, client.timeline(task_id)
    assert inst.stop() == 0
    data = disk / "data"
    assert integrity(data / "herald.db") == "ok"
    assert integrity(data / "queue.db") == "ok"
