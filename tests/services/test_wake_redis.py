"""Wake-ups over Redis pub/sub, one look per burst per receiver: a real redis-server (its
own per test where it is restarted), real sockets, real sender processes."""

from __future__ import annotations

import asyncio
import json
import select
import selectors
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

from services.wake_redis import (
    LOOK,
    PRUNED_WAKE,
    AsyncRedisWakeSender,
    RedisWakeReceiver,
    RedisWakeSender,
    idle_key,
    parse_principal_wake,
    principal_heads,
    principal_wake,
)
from tests.redis_server import RedisServer

ROOT = Path(__file__).parents[2]
CHANNEL = "herald:wake:test"


def readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def test_a_burst_takes_one_message_and_the_next_burst_another(redis_url: str) -> None:
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        for _ in range(1000):
            tx.wake()
        assert rx.wait(5) == [LOOK]  # one for the whole burst
        assert (tx.sent, tx.coalesced) == (1, 999)
        assert rx.drain() == []
        tx.wake()  # after the drain: the receiver must hear of it
        assert rx.wait(5) == [LOOK]
        assert tx.sent == 2
    finally:
        tx.close()
        rx.close()


def test_a_wake_up_that_says_something_is_always_sent(redis_url: str) -> None:
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        tx.wake()
        tx.wake(PRUNED_WAKE)  # idle or not, it is sent
        tx.wake()  # coalesced into them
        tx.wake(b"!t1")  # a look that names a task is advice: coalesced too
        tx.wake(b"?t2")  # "coming without a wake-up of its own": always sent
        assert rx.wait(5) == [LOOK, PRUNED_WAKE, b"?t2"]
        assert (tx.sent, tx.coalesced) == (3, 2)
        tx.wake(b"!t3")  # after the drain: sent, hint and all
        assert rx.wait(5) == [b"!t3"]
    finally:
        tx.close()
        rx.close()


def test_principal_wake_ups_are_parsed_always_sent_and_leave_looks_alone(
    redis_url: str,
) -> None:
    assert principal_wake("alice", 42) == b"@42:alice"
    assert parse_principal_wake(b"@42:alice") == ("alice", 42)
    assert parse_principal_wake(principal_wake("team:ops/é", 7)) == ("team:ops/é", 7)
    for other in (LOOK, b"!t1", PRUNED_WAKE, b"@", b"@x:alice", b"@42", b"@42:", b"@-1:a",
                  b"@1:\xff"):  # fmt: skip
        assert parse_principal_wake(other) is None, other
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        tx.wake()
        tx.wake_principal("alice", 3)  # the receiver is not idle: still sent
        tx.wake_principal("bob", 9)
        tx.wake_principal("alice", 5)
        messages = rx.wait(5)
        while len(messages) < 4:
            messages += rx.wait(5)
        assert messages == [LOOK, b"@3:alice", b"@9:bob", b"@5:alice"]
        assert principal_heads(messages) == {"alice": 5, "bob": 9}
        tx.wake_principal("bob", 10)
        assert rx.wait(5) == [b"@10:bob"]
        tx.wake()  # the principal wake-up did not take the receiver out of the idle set
        assert rx.wait(5) == [LOOK]
        assert (tx.sent, tx.coalesced) == (6, 0)
    finally:
        tx.close()
        rx.close()


def test_the_async_sender_never_waits_and_merges_what_is_pending(redis_url: str) -> None:
    rx = RedisWakeReceiver(redis_url, CHANNEL)

    async def burst() -> tuple[int, int, int]:
        tx = AsyncRedisWakeSender(redis_url, CHANNEL)
        try:
            for _ in range(1000):
                tx.wake()  # returns at once: nothing is sent before the loop runs
            tx.wake(b"!t1")
            assert (tx.sent, tx.coalesced) == (0, 1000)
            await tx.flush()
            assert rx.wait(5) == [LOOK]
            tx.wake()
            tx.wake(PRUNED_WAKE)
            tx.wake_principal("alice", 1)
            tx.wake_principal("bob", 2)
            tx.wake_principal("alice", 3)
            await tx.flush()
            messages = rx.wait(5)
            while len(messages) < 4:
                messages += rx.wait(5)
            assert messages == [LOOK, PRUNED_WAKE, b"@3:alice", b"@2:bob"]
            return tx.sent, tx.coalesced, tx.failed
        finally:
            await tx.aclose()

    try:
        assert asyncio.run(burst()) == (5, 1001, 0)
    finally:
        rx.close()


def test_a_receiver_gone_leaves_the_idle_set_by_itself_or_at_the_next_publish(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        rx = RedisWakeReceiver(redis_url, CHANNEL)
        assert r.smembers(idle_key(CHANNEL)) == {rx.id}
        rx.close()
        assert r.smembers(idle_key(CHANNEL)) == set()
        killed = subprocess.run(
            [sys.executable, "-c", "import os, sys\nfrom services.wake_redis import "
             "RedisWakeReceiver\nprint(RedisWakeReceiver(sys.argv[1], sys.argv[2]).id.decode(),"
             " flush=True)\nos._exit(9)", redis_url, CHANNEL],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.smembers(idle_key(CHANNEL)) == {killed.stdout.strip().encode()}
        tx.wake()  # one message to nobody, and the set is empty again: no leak
        assert (tx.sent, r.exists(idle_key(CHANNEL))) == (1, 0)
        tx.wake()
        assert tx.coalesced == 1
    finally:
        tx.close()
        r.close()


def test_a_busy_receiver_does_not_silence_an_idle_one(redis_url: str) -> None:
    """Two workers on one channel: the busy one stays out of the idle set while it works
    (drain without joining, as the dispatcher does); the idle one must still be woken."""
    busy = RedisWakeReceiver(redis_url, CHANNEL)
    idle = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        tx.wake()
        assert busy.wait(5) == [LOOK]
        assert idle.wait(5) == [LOOK]  # both woken by the one message
        busy.drain(clear=False)  # busy stays out; idle joined in its wait's drain
        for _ in range(3):
            tx.wake()
            assert idle.wait(5) == [LOOK]
        assert tx.sent == 4  # each wake-up published: someone was idle each time
        assert busy.drain(clear=False) == [LOOK] * 3  # it heard them too
        assert busy.park() == []  # out of the set: joins, and must look once more
        assert busy.park() is None  # in the set, no message since: nothing to do
        tx.wake()
        assert busy.wait(5) == [LOOK]
        assert idle.wait(5) == [LOOK]
    finally:
        tx.close()
        busy.close()
        idle.close()


def test_park_leaves_looks_out_while_awake_and_joins_before_sleep(redis_url: str) -> None:
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        assert rx.park() is None  # just subscribed, in the idle set
        tx.wake()
        assert readable(rx.fileno(), 5)
        assert rx.drain(clear=False) == [LOOK]  # awake: stays out of the set
        for _ in range(10):
            tx.wake()
        assert tx.coalesced == 10  # nobody idle: nothing published
        assert not readable(rx.fileno(), 0.05)
        assert rx.park() == []  # joins: the owner looks once more (and sees those ten)
        tx.wake()
        assert rx.wait(5) == [LOOK]
    finally:
        tx.close()
        rx.close()


def test_fileno_serves_a_selector_and_an_asyncio_reader(redis_url: str) -> None:
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    tx = RedisWakeSender(redis_url, CHANNEL)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(rx, selectors.EVENT_READ)
            assert sel.select(0) == []
            tx.wake()
            assert [key.fileobj for key, _ in sel.select(5)] == [rx]
            assert rx.drain() == [LOOK]
            assert sel.select(0) == []
            sel.unregister(rx)

        async def woken() -> list[bytes]:
            loop = asyncio.get_running_loop()
            got: asyncio.Future[list[bytes]] = loop.create_future()
            loop.add_reader(rx.fileno(), lambda: got.done() or got.set_result(rx.drain()))
            try:
                loop.call_soon(tx.wake)
                return await asyncio.wait_for(got, 5)
            finally:
                loop.remove_reader(rx.fileno())

        assert asyncio.run(woken()) == [LOOK]
    finally:
        tx.close()
        rx.close()


def test_a_restarted_server_is_reported_as_a_look_on_the_same_descriptor(
    redis_server: RedisServer,
) -> None:
    """The receiver reconnects by itself (its own timer, no sender needed), resubscribes,
    rejoins the idle set, and says LOOK once: what was sent meanwhile is not lost."""
    url = redis_server.url
    rx = RedisWakeReceiver(url, CHANNEL)
    tx = RedisWakeSender(url, CHANNEL)
    store = redis.Redis.from_url(url)
    try:
        fd = rx.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(rx, selectors.EVENT_READ)  # once, as the dispatcher does
            redis_server.stop()
            assert sel.select(5), "the drop was not seen"
            assert rx.drain() == []  # lost, and nothing to say yet: Redis is down
            assert not rx.connected
            tx.wake()  # cannot reach Redis: counted, never raised
            assert tx.failed == 1
            redis_server.start()  # same port, empty (no persistence)
            store.set("counter", 1)  # a write, and a wake-up sent while rx is still away
            tx.wake()  # (the idle set is gone with the old server: coalesced)
            got: list[bytes] = []
            deadline = time.monotonic() + 10
            while LOOK not in got and time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    got += rx.drain()
            assert got == [LOOK]  # the owner reads everything once: it sees counter = 1
            assert (rx.connected, rx.reconnects, rx.fileno()) == (True, 1, fd)
            assert store.sismember(idle_key(CHANNEL), rx.id)
            tx.wake()  # and it is woken as before
            assert sel.select(5)
            assert rx.drain() == [LOOK]
    finally:
        store.close()
        tx.close()
        rx.close()


def test_a_receiver_started_while_redis_is_down_looks_once_it_is_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    url = server.url
    server.stop()
    rx = RedisWakeReceiver(url, CHANNEL)
    try:
        assert not rx.connected
        assert rx.wait(0.2) == []
        server.start()
        assert rx.wait(10) == [LOOK]
        assert rx.connected
    finally:
        rx.close()
        server.stop()


# Each sender records events (a counter of its own in Redis, SET before it wakes: the
# "commit"), in bursts of random length, and waits for every receiver to have seen the end
# of each burst before the next. One lost wake-up and the run never completes: a receiver
# sleeps (no fallback timer) while the sender waits for it.
SENDER = textwrap.dedent(
    """
    import json, random, sys, time
    import redis
    from services.wake_redis import RedisWakeSender
    url, channel, index, events, receivers = sys.argv[1:6]
    index, events, receivers = int(index), int(events), int(receivers)
    rnd = random.Random(index)
    tx = RedisWakeSender(url, channel)
    r = redis.Redis.from_url(url)
    done = 0
    while done < events:
        for _ in range(min(events - done, rnd.choice((1, 1, 2, 3, 8)))):
            done += 1
            r.set(f"counter:{index}", done)
            tx.wake()
        acks = [f"ack:{i}" for i in range(receivers)]
        while min(int(r.hget(a, index) or 0) for a in acks) < done:
            time.sleep(rnd.choice((0, 0.0001, 0.0005)))
    print(json.dumps({"sent": tx.sent, "coalesced": tx.coalesced, "failed": tx.failed}))
    """
)
# The same, on an asyncio loop with the web's sender (wake-ups sent from a task of the loop).
ASYNC_SENDER = textwrap.dedent(
    """
    import asyncio, json, random, sys
    import redis, redis.asyncio
    from services.wake_redis import AsyncRedisWakeSender
    url, channel, index, events, receivers = sys.argv[1:6]
    index, events, receivers = int(index), int(events), int(receivers)

    async def main():
        rnd = random.Random(index)
        tx = AsyncRedisWakeSender(url, channel)
        r = redis.asyncio.Redis.from_url(url)
        rs = redis.Redis.from_url(url)
        done = 0
        while done < events:
            for _ in range(min(events - done, rnd.choice((1, 1, 2, 3, 8)))):
                done += 1
                if rnd.random() < 0.5:
                    await asyncio.sleep(0)  # the sender's task may go out meanwhile
                # A commit that does not yield (as a write on the loop's thread), so the
                # wake-up below may find a round trip out that began before it.
                rs.set(f"counter:{index}", done)
                tx.wake()
            acks = [f"ack:{i}" for i in range(receivers)]
            while min([int(await r.hget(a, index) or 0) for a in acks]) < done:
                await asyncio.sleep(rnd.choice((0, 0.0001, 0.0005)))
        await tx.aclose()
        await r.aclose()
        print(json.dumps({"sent": tx.sent, "coalesced": tx.coalesced, "failed": tx.failed}))

    asyncio.run(main())
    """
)


def _receive(url: str, index: int, senders: int, events: int, awake: bool,
             out: dict[int, object]) -> None:  # fmt: skip
    """One receiver (a thread): reads every counter after each wake-up, acks what it saw."""
    rx = RedisWakeReceiver(url, CHANNEL)
    r = redis.Redis.from_url(url)
    keys = [f"counter:{i}" for i in range(senders)]
    seen = [0] * senders
    timeouts = 0

    def look() -> list[int]:
        seen = [int(v or 0) for v in r.mget(keys)]
        r.hset(f"ack:{index}", mapping=dict(enumerate(seen)))
        return seen

    try:
        r.hset(f"ack:{index}", mapping=dict.fromkeys(range(senders), 0))
        out[index] = "ready"
        while sum(seen) < senders * events:
            if awake and rx.park() is not None:  # as the worker's loop: park, look, sleep
                seen = look()
                if sum(seen) == senders * events:
                    break
            # Long enough that only a lost wake-up makes it run out.
            if not readable(rx.fileno(), 20):
                timeouts += 1
                break
            rx.drain(clear=not awake)
            seen = look()
        out[index] = {"seen": seen, "timeouts": timeouts}
    except BaseException as exc:
        out[index] = repr(exc)
        raise
    finally:
        rx.close()
        r.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("modes", "sender"),
    [(("drain",), SENDER), (("park",), SENDER), (("drain", "park"), SENDER),
     (("drain", "park"), ASYNC_SENDER)],
    ids=["drain", "park", "two-receivers", "two-receivers-async-senders"],
)  # fmt: skip
def test_many_senders_never_lose_a_wake_up(
    redis_url: str, modes: tuple[str, ...], sender: str
) -> None:
    """With "park" the receiver stays out of the idle set while it works, as the worker
    does (drain without joining, park before it sleeps); "two-receivers" runs one of each
    on the same channel, and every sender waits for both."""
    senders, events = 6, 1000
    out: dict[int, object] = {}
    threads = [
        threading.Thread(target=_receive,
                         args=(redis_url, i, senders, events, mode == "park", out))
        for i, mode in enumerate(modes)
    ]  # fmt: skip
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(out) < len(modes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(out) == len(modes), out
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                sender,
                redis_url,
                CHANNEL,
                str(i),
                str(events),
                str(len(modes)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(senders)
    ]
    try:
        for t in threads:
            t.join(300)
        for i in range(len(modes)):  # (a receiver that gave up leaves its senders waiting)
            assert out[i] == {"seen": [events] * senders, "timeouts": 0}, out
        stats = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert [p.returncode for p in procs] == [0] * senders
    sent = sum(s["sent"] for s in stats)
    assert sum(s["failed"] for s in stats) == 0
    assert sum(s["coalesced"] for s in stats) + sent == senders * events
    assert sent < senders * events  # bursts were coalesced


# The measurement: one sender process, one receiver here; each round the receiver joins the
# idle set and says so, the sender wakes with its clock in the hint, and the receiver takes
# the time it was woken at (CLOCK_MONOTONIC is the same clock in both processes).
TIMED_SENDER = textwrap.dedent(
    """
    import sys, time
    import redis
    from services.wake_redis import RedisWakeSender
    url, channel, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tx = RedisWakeSender(url, channel)
    r = redis.Redis.from_url(url)
    costs = []
    for i in range(rounds):
        r.blpop("ready", 10)
        t0 = time.monotonic_ns()
        tx.wake(b"!%d" % t0)
        costs.append(time.monotonic_ns() - t0)
    costs.sort()
    print(costs[len(costs) // 2] / 1000, tx.sent, tx.coalesced)
    """
)


@pytest.mark.slow
def test_measure_publish_to_woken_latency(redis_url: str) -> None:
    rounds = 1000
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    r = redis.Redis.from_url(redis_url)
    proc = subprocess.Popen([sys.executable, "-c", TIMED_SENDER, redis_url, CHANNEL,
                             str(rounds)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    latencies = []
    try:
        for _ in range(rounds):
            r.rpush("ready", 1)
            assert readable(rx.fileno(), 10)
            woken = time.monotonic_ns()
            (message,) = rx.drain()
            latencies.append((woken - int(message[1:])) / 1000)
        cost, sent, coalesced = proc.communicate(timeout=30)[0].split()
    finally:
        if proc.poll() is None:
            proc.kill()
        rx.close()
        r.close()
    assert (int(sent), int(coalesced)) == (rounds, 0)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"\nwake() to receiver woken over {rounds} wakes: p50 {statistics.median(latencies):.0f}"
        f" us, p99 {q[98]:.0f} us; the sender's wake() call p50 {float(cost):.0f} us"
    )


# What coalescing saves, against publishing every wake-up: bursts of commits (a SET each)
# and wake-ups from sender processes, each way in turn; the receiver here looks (a GET)
# after each drain, and its CPU time per burst is measured (only it runs on this thread).
# "idle set, park" is the worker's way: drain without joining, park before sleeping.
MODES = ("always", "idle set", "idle set, park")
BURST_SENDER = textwrap.dedent(
    """
    import json, statistics, sys, time
    import redis
    from services.wake_redis import LOOK, RedisWakeSender
    url, channel, index, bursts, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    modes = json.loads(sys.argv[6])
    tx = RedisWakeSender(url, channel)
    r = redis.Redis.from_url(url)
    costs = {m: [] for m in modes}
    for k in range(bursts):
        mode = modes[k % len(modes)]
        r.blpop(f"go:{index}", 30)
        for i in range(n):
            r.set(f"counter:{index}", i)
            t0 = time.perf_counter_ns()
            if mode == "always":
                r.publish(channel, LOOK)
            else:
                tx.wake()
            costs[mode].append(time.perf_counter_ns() - t0)
        r.publish(channel, b"end")
    print(json.dumps({m: statistics.median(c) / 1000 for m, c in costs.items()}), flush=True)
    """
)


@pytest.mark.slow
def test_measure_what_coalescing_saves(redis_url: str) -> None:
    rounds, n, senders = 4, 1000, 2
    rx = RedisWakeReceiver(redis_url, CHANNEL)
    r = redis.Redis.from_url(redis_url)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                BURST_SENDER,
                redis_url,
                CHANNEL,
                str(i),
                str(rounds * len(MODES)),
                str(n),
                json.dumps(MODES),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(senders)
    ]
    keys = [f"counter:{i}" for i in range(senders)]
    figures: dict[str, list[tuple[float, int, int]]] = {m: [] for m in MODES}
    try:
        for k in range(rounds * len(MODES)):
            mode = MODES[k % len(MODES)]
            for i in range(senders):
                r.rpush(f"go:{i}", 1)
            cpu0, wakeups, messages, ends = time.thread_time(), 0, 0, 0
            while ends < senders:
                assert readable(rx.fileno(), 30)
                # Publishing every time, nobody needs the idle set: that receiver never joins.
                got = rx.drain(clear=mode == "idle set")
                while True:
                    wakeups += 1
                    messages += len(got)
                    ends += got.count(b"end")
                    r.mget(keys)  # the look
                    if mode != "idle set, park" or ends == senders:
                        break
                    parked = rx.park()  # before sleeping
                    if parked is None:
                        break
                    got = parked
            figures[mode].append((time.thread_time() - cpu0, wakeups, messages))
        costs = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        rx.close()
        r.close()
    print(f"\n{senders} senders x {n} commits and wake-ups per burst, {rounds} bursts each way:")
    for mode, rows in figures.items():
        cpu = statistics.median(row[0] for row in rows) * 1e6 / (n * senders)
        print(
            f"  {mode:14}: receiver CPU {cpu:.1f} us per commit, woken "
            f"{statistics.median(row[1] for row in rows):.0f} times for "
            f"{statistics.median(row[2] for row in rows):.0f} messages (medians); "
            f"the sender's call p50 {statistics.median(c[mode] for c in costs):.0f} us"
        )
