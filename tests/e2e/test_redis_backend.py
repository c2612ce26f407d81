"""`herald serve --backend redis://...` on one machine: the same services, the same API
and events, on a real redis-server; what survives a killed worker, a killed notifier and
a restarted Redis."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from services.core.events import EventType
from tests.e2e.harness import collect_all_until_terminal, start_serve, wait_for
from tests.redis_server import RedisServer, require_redis_server


@pytest.fixture
def redis(tmp_path: Path):
    require_redis_server()
    with RedisServer(tmp_path / "redis", aof=True) as server:
        yield server


@pytest.fixture
def on_redis(tmp_path_factory, runtime_dir, redis):
    data = tmp_path_factory.mktemp("data")
    inst = start_serve(data, runtime_dir, "--backend", redis.url)
    yield inst
    inst.stop()


def test_tasks_run_and_their_events_arrive(on_redis):
    client = on_redis.client
    with client.events() as stream:
        ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(20)]
        events = collect_all_until_terminal(stream, ids, timeout=60)
    for task_id in ids:
        types = [e.type for e in events[task_id]]
        assert types[-1] is EventType.SUCCEEDED, types
        assert client.get_task(task_id)["state"] == "succeeded"
    seqs = [e.seq for evs in events.values() for e in evs]
    assert len(seqs) == len(set(seqs))
    # Nothing of it is in the data dir's SQLite files: the ledger is Redis's.
    assert not (on_redis.data_dir / "herald.db").exists()


def test_a_killed_worker_loses_nothing_and_resume_is_exact(on_redis, redis):
    client = on_redis.client
    with client.events() as stream:
        first = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        collect_all_until_terminal(stream, first, timeout=60)
        last_seq = client.get_task(first[-1])  # (the task exists)
        assert last_seq
        slow = client.submit("demo.answer", {"seconds": 3})["id"]
        wait_for(lambda: client.get_task(slow)["state"] == "running", timeout=30)
        os.kill(on_redis.service_pid("worker"), signal.SIGKILL)
        more = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        events = collect_all_until_terminal(stream, [slow, *more], timeout=90)
    assert events[slow][-1].type is EventType.SUCCEEDED
    assert any(e.type is EventType.RETRYING for e in events[slow])
    assert all(evs[-1].type is EventType.SUCCEEDED for evs in events.values())


def test_redis_restarted_with_aof_keeps_everything_accepted(on_redis, redis):
    client = on_redis.client
    ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(10)]
    redis.restart()  # appendfsync always: every acknowledged write is on disk
    more = wait_for(lambda: _submit(client), timeout=30)
    wait_for(lambda: all(client.get_task(t)["state"] == "succeeded"
                         for t in [*ids, more]), timeout=60)  # fmt: skip


def _submit(client):
    try:
        return client.submit("demo.answer", {"seconds": 0})["id"]
    except Exception:
        return None
