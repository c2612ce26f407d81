"""The transport on Redis: Huey's RedisStorage on a real redis-server, real processes."""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from services.layout import DataLayout
from services.queue import TaskQueue
from services.queue_redis import RedisTaskQueue

ROOT = Path(__file__).parents[2]

# A Huey program that is not Herald: its own RedisHuey and a task of the same name. It reads
# what RedisTaskQueue wrote ("read") or writes what RedisTaskQueue must read ("write").
FOREIGN_HUEY = textwrap.dedent(
    """
    import sys
    from huey import RedisHuey
    url, mode = sys.argv[1], sys.argv[2]
    huey = RedisHuey("herald", url=url, blocking=False, results=False)
    def run(task_id):
        pass
    run.__module__ = "services.worker.queue"
    run = huey.task(name="herald.run")(run)
    if mode == "read":
        while (task := huey.dequeue()) is not None:
            print(task.name, *task.args)
    else:
        for task_id in sys.argv[3:]:
            huey.enqueue(run.s(task_id))
    """
)


def calls(url: str, command: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_task_ids_come_out_in_the_order_they_went_in(redis_url: str) -> None:
    q = RedisTaskQueue(redis_url)
    try:
        assert (q.dequeue(), len(q), q.pending_ids(), q.wal_size()) == (None, 0, set(), 0)
        q.enqueue("t1")
        assert q.try_enqueue("t2") is True
        q.enqueue_many(["t3", "t4", "t5"])
        q.enqueue_many([])
        assert len(q) == 5
        assert q.pending_ids() == {"t1", "t2", "t3", "t4", "t5"}
        assert [q.dequeue() for _ in range(6)] == ["t1", "t2", "t3", "t4", "t5", None]
        assert len(q) == 0
    finally:
        q.close()


def test_enqueue_many_is_one_push(redis_url: str) -> None:
    q = RedisTaskQueue(redis_url)
    try:
        before = calls(redis_url, "lpush")
        q.enqueue_many([f"t{i}" for i in range(100)])
        assert calls(redis_url, "lpush") == before + 1
        assert len(q) == 100
    finally:
        q.close()


def test_two_queues_by_name_are_apart(redis_url: str) -> None:
    a, b = RedisTaskQueue(redis_url), RedisTaskQueue(redis_url, name="other")
    try:
        a.enqueue("ta")
        b.enqueue("tb")
        assert (a.dequeue(), a.dequeue(), b.dequeue(), b.dequeue()) == ("ta", None, "tb", None)
    finally:
        a.close()
        b.close()


def test_messages_are_hueys_own_both_ways(redis_url: str) -> None:
    q = RedisTaskQueue(redis_url)
    try:
        q.enqueue("t1")
        q.enqueue_many(["t2", "t3"])
        read = subprocess.run([sys.executable, "-c", FOREIGN_HUEY, redis_url, "read"],
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        # (It finds the task in its registry as "services.worker.queue.herald.run", the key
        # services.queue's messages have always had.)
        assert read.stdout.splitlines() == ["herald.run t1", "herald.run t2", "herald.run t3"]
        subprocess.run([sys.executable, "-c", FOREIGN_HUEY, redis_url, "write", "t4", "t5"],
                       timeout=60, check=True)  # fmt: skip
        assert [q.dequeue(), q.dequeue(), q.dequeue()] == ["t4", "t5", None]
    finally:
        q.close()


def test_the_same_message_as_the_sqlite_queue(redis_url: str, tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    layout.queue_db.parent.mkdir(parents=True, exist_ok=True)
    lite, q = TaskQueue(layout), RedisTaskQueue(redis_url)
    try:
        lite_msg = lite.huey.deserialize_task(lite.huey.serialize_task(lite._run.s("t1")))
        q.enqueue("t1")
        (data,) = q.huey.storage.enqueued_items()
        msg = q.huey.deserialize_task(data)
        assert (msg.name, msg.args, msg.kwargs) == (lite_msg.name, lite_msg.args, lite_msg.kwargs)
    finally:
        q.close()


def test_a_message_that_cannot_be_read_is_logged_and_skipped(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = RedisTaskQueue(redis_url)
    raw = redis.Redis.from_url(redis_url)
    try:
        key = q.huey.storage.queue_key
        q.enqueue("t1")
        raw.lpush(key, b"not a pickle")
        raw.lpush(key, q.huey.serialize_task(q._run.s()))  # Huey's, without a task id
        q.enqueue("t2")
        raw.lpush(key, b"\x80\x04 truncated")
        with caplog.at_level(logging.ERROR, "services.queue_redis"):
            assert q.pending_ids() == {"t1", "t2"}
            assert [q.dequeue(), q.dequeue(), q.dequeue()] == ["t1", "t2", None]
            q.enqueue("t3")
            raw.lpush(key, b"garbage")
            q.enqueue("t4")
            assert [q.dequeue_blocking(5), q.dequeue_blocking(5)] == ["t3", "t4"]
        skipped = [r for r in caplog.records if r.name == "services.queue_redis"]
        assert len(skipped) == 4  # the four bad ones, each once, at dequeue
        assert len(q) == 0
    finally:
        raw.close()
        q.close()


def test_dequeue_blocking_is_woken_by_an_enqueue_from_another_process(redis_url: str) -> None:
    q = RedisTaskQueue(redis_url)
    try:
        assert q.dequeue_blocking(0.05) is None  # empty: it waited, and nothing came
        assert q.dequeue_blocking(0) is None  # 0 is "do not wait", not BRPOP's "for ever"
        # The producer enqueues only once the consumer is blocked in BRPOP (CLIENT LIST shows
        # the command a client is blocked in), so the enqueue is what wakes it.
        producer = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(PRODUCER), redis_url], cwd=ROOT
        )
        try:
            assert q.dequeue_blocking(30) == "late"
        finally:
            assert producer.wait(30) == 0
    finally:
        q.close()


PRODUCER = """
    import sys, time
    import redis
    from services.queue_redis import RedisTaskQueue
    r = redis.Redis.from_url(sys.argv[1])
    while not any(c.get("cmd") == "brpop" for c in r.client_list()):
        time.sleep(0.001)
    RedisTaskQueue(sys.argv[1]).enqueue("late")
"""


def test_a_popped_message_is_gone_for_good(redis_url: str) -> None:
    """No ack, as the module says: what a killed consumer popped is not given back by the
    queue (the ledger's recovery re-enqueues its task)."""
    q = RedisTaskQueue(redis_url)
    try:
        q.enqueue("t1")
        consumer = subprocess.run(
            [sys.executable, "-c",
             "import os, sys\nfrom services.queue_redis import RedisTaskQueue\n"
             "print(RedisTaskQueue(sys.argv[1]).dequeue(), flush=True)\nos._exit(137)\n",
             redis_url],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (consumer.returncode, consumer.stdout) == (137, "t1\n")
        assert (q.dequeue(), q.pending_ids()) == (None, set())
    finally:
        q.close()


# The measurement: a consumer process blocked in dequeue_blocking, the producer here; each
# task id carries the producer's CLOCK_MONOTONIC at enqueue (the same clock in both
# processes), and the consumer answers on a list the producer waits on before the next.
CONSUMER = textwrap.dedent(
    """
    import sys, time
    import redis
    from services.queue_redis import RedisTaskQueue
    url, rounds = sys.argv[1], int(sys.argv[2])
    q = RedisTaskQueue(url)
    r = redis.Redis.from_url(url)
    r.rpush("ready", 1)
    for _ in range(rounds):
        task_id = q.dequeue_blocking(10)
        r.rpush("got", time.monotonic_ns() - int(task_id))
    """
)


@pytest.mark.slow
def test_measure_enqueue_to_dequeue_round_trip(redis_url: str) -> None:
    rounds = 1000
    q = RedisTaskQueue(redis_url)
    r = redis.Redis.from_url(redis_url)
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, redis_url, str(rounds)],
                                cwd=ROOT)  # fmt: skip
    one_way, round_trip = [], []
    try:
        assert r.blpop(["ready"], 30)
        for _ in range(rounds):
            t0 = time.monotonic_ns()
            q.enqueue(str(t0))
            reply = r.blpop(["got"], 10)
            assert reply is not None
            round_trip.append((time.monotonic_ns() - t0) / 1000)
            one_way.append(int(reply[1]) / 1000)
        assert consumer.wait(30) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
        r.close()
        q.close()
    print(
        f"\nenqueue -> dequeue_blocking in another process over {rounds}: p50 "
        f"{statistics.median(one_way):.0f} us (p99 {statistics.quantiles(one_way, n=100)[98]:.0f}"
        f" us); and back to the producer, p50 {statistics.median(round_trip):.0f} us"
    )
