"""A full disk, end to end: real `herald serve` with its data dir on a small tmpfs.

While the disk is full, a submit is answered 202 (recorded) or 507 `disk_full`, never
another 5xx, and health says `disk_full`; once space is back, every accepted task runs
to its end by itself (no service restarted), and both databases pass an integrity check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Instance, pid_alive, start_serve, wait_for

SUBMITS = 60
TMPFS_SIZE = "20m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs mounted for the test (root only; skipped where mounting is refused)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700",
                           "tmpfs", str(mount)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk refuses another byte."""
    chunk = 1024 * 1024
    with open(path, "wb", buffering=0) as f:
        while chunk:
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.fixture
def full_disk_instance(small_disk: Path, tmp_path: Path) -> Iterator[Instance]:
    inst = start_serve(small_disk / "data", tmp_path / "runtime", "--workers", "2")
    try:
        yield inst
    finally:
        inst.stop()


def test_full_disk_answers_507_and_recovers_without_a_restart(full_disk_instance, small_disk):
    inst = full_disk_instance
    client = inst.client
    pids = {name: inst.service_pid(name) for name in ("web", "worker", "notifier")}
    warm = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(warm["id"])["state"] == "succeeded")

    # Attempts that run while the disk fills up, and report (progress, outcome) while it
    # is full: none of it may be lost, nor any of them run twice.
    busy = [client.submit("demo.answer", {"seconds": 1})["id"] for _ in range(4)]
    wait_for(lambda: client.get(busy[0])["state"] == "running")
    filler = small_disk / "filler"
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
    wait_for(lambda: client.health()["status"] == "ok", timeout=10, interval=0.2)
    # Nothing was restarted: the same processes serve, and the supervisor counted no exit.
    assert all(pid_alive(pid) for pid in pids.values())
    status = wait_for(lambda: inst.status() if all(
        s.get("pid") == pids[name] for name, s in inst.status().items()) else None)
    assert all(s["restarts"] == 0 for s in status.values()), status

    for task_id in busy:
        assert client.get(task_id)["attempt"] == 1, client.timeline(task_id)
    assert inst.stop() == 0
    data = small_disk / "data"
    assert integrity(data / "herald.db") == "ok"
    assert integrity(data / "queue.db") == "ok"
