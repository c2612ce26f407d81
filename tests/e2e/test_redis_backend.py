"""`herald serve --backend redis://...` on one machine: the same services, the same API
and events, on a real redis-server; what survives a killed worker, a killed notifier and
a restarted Redis."""

from __future__ import annotations

import os
import signal
import time
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
        assert client.get(task_id)["state"] == "succeeded"
    seqs = [e.seq for evs in events.values() for e in evs]
    assert len(seqs) == len(set(seqs))
    # The ledger is Redis's: the data dir holds no SQLite ledger or queue.
    assert not (on_redis.data_dir / "herald.db").exists()
    assert not (on_redis.data_dir / "queue.db").exists()


def test_a_killed_worker_loses_nothing(on_redis):
    """SIGKILL of the worker mid-attempt: the supervisor starts another, which re-queues
    the dead one's task (its process is gone: not even the lease's expiry is waited for)."""
    client = on_redis.client
    with client.events() as stream:
        slow = client.submit("demo.answer", {"seconds": 2})["id"]
        wait_for(lambda: client.get(slow)["state"] == "running", timeout=30)
        os.kill(on_redis.service_pid("worker"), signal.SIGKILL)
        more = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        events = collect_all_until_terminal(stream, [slow, *more], timeout=90)
    assert all(evs[-1].type is EventType.SUCCEEDED for evs in events.values())
    assert EventType.RETRYING in [e.type for e in events[slow]]


def test_a_killed_notifier_resumes_exactly(on_redis):
    client = on_redis.client
    seen: list[int] = []
    with client.events() as stream:
        first = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        got = collect_all_until_terminal(stream, first, timeout=60)
        seen += [e.seq for evs in got.values() for e in evs]
        os.kill(on_redis.service_pid("notifier"), signal.SIGKILL)
        later = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        got = collect_all_until_terminal(stream, later, timeout=90)  # after its resume
        seen += [e.seq for evs in got.values() for e in evs]
    assert len(seen) == len(set(seen))
    for task_id in later:
        assert [e.type for e in got[task_id]][-1] is EventType.SUCCEEDED


def test_redis_restarted_with_aof_keeps_everything_accepted(on_redis, redis):
    client = on_redis.client
    ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(10)]
    redis.restart()  # appendfsync always: every acknowledged write is on disk
    deadline = time.monotonic() + 30
    more = None
    while more is None and time.monotonic() < deadline:
        try:
            more = client.submit("demo.answer", {"seconds": 0})["id"]
        except Exception:  # 5xx/507 while Redis is away: the client tries again
            time.sleep(0.2)
    assert more is not None, "the web did not take tasks again after Redis came back"
    wait_for(lambda: all(client.get(t)["state"] == "succeeded" for t in [*ids, more]),
             timeout=60)  # fmt: skip
