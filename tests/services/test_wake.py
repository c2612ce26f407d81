"""Wake-ups, one per burst: real sockets, a real shared pending flag, real processes."""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.wake import PRUNED_WAKE, WakeReceiver, WakeSender, pending_path

ROOT = Path(__file__).parents[2]


@pytest.fixture
def address(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "notifier.wake")


def test_a_burst_takes_one_datagram_and_the_next_burst_another(address: str) -> None:
    rx = WakeReceiver(address)
    tx = WakeSender(address)
    try:
        for _ in range(1000):
            tx.wake()
        assert rx.wait(5) == [b"!"]  # one for the whole burst
        assert (tx.sent, tx.coalesced) == (1, 999)
        assert rx.drain() == []
        tx.wake()  # after the drain: the receiver must hear of it
        assert rx.wait(5) == [b"!"]
        assert tx.sent == 2
    finally:
        tx.close()
        rx.close()


def test_a_wake_up_that_says_something_is_always_sent(address: str) -> None:
    rx = WakeReceiver(address)
    tx = WakeSender(address)
    try:
        tx.wake()
        tx.wake(PRUNED_WAKE)  # pending or not, it is sent
        tx.wake()  # coalesced into them
        tx.wake(b"!t1")  # a look that names a task is advice: coalesced too
        tx.wake(b"?t2")  # "coming without a wake-up of its own": always sent
        assert rx.wait(5) == [b"!", PRUNED_WAKE, b"?t2"]
        assert (tx.sent, tx.coalesced) == (3, 2)
        tx.wake(b"!t3")  # after the drain: sent, hint and all
        assert rx.wait(5) == [b"!t3"]
    finally:
        tx.close()
        rx.close()


def test_a_receiver_that_died_with_a_wake_up_pending_is_woken_once_restarted(
    address: str,
) -> None:
    tx = WakeSender(address)  # before any receiver: it maps the flag itself
    tx.wake()  # nobody listens: marked pending, never sent
    rx = WakeReceiver(address)
    tx.wake()
    assert rx.wait(5) == [b"!"]
    tx.wake()  # pending again, and the receiver dies before it drains
    tx.wake()
    assert tx.coalesced == 1
    rx.close()
    rx = WakeReceiver(address)  # the restart: same file, flag cleared
    try:
        assert Path(pending_path(address) or "").stat().st_size == 1
        tx.wake()  # the sender's old mapping still works
        assert rx.wait(5) == [b"!"]
    finally:
        tx.close()
        rx.close()


def test_wait_works_above_descriptor_1023(address: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the hard limit of open files is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        rx = WakeReceiver(address)
        tx = WakeSender(address)
        assert rx.fileno() > 1023
        assert rx.wait(0) == []
        tx.wake()
        assert rx.wait(5) == [b"!"]
        tx.close()
        rx.close()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# Each sender records events (a counter in its own file, written before it wakes: the
# "commit"), in bursts of random length, and waits for the receiver to have seen the end of
# each burst before the next. One lost wake-up and the run never completes: the receiver
# sleeps (no fallback timer) while the sender waits for it.
SENDER = textwrap.dedent(
    """
    import json, os, random, sys, time
    from services.wake import WakeSender
    address, counters, acks, index, events = sys.argv[1:6]
    index, events = int(index), int(events)
    rnd = random.Random(index)
    tx = WakeSender(address)
    out = os.open(counters, os.O_RDWR)
    ack = os.open(acks, os.O_RDONLY)
    done = 0
    while done < events:
        for _ in range(min(events - done, rnd.choice((1, 1, 2, 3, 8)))):
            done += 1
            os.pwrite(out, done.to_bytes(8, "little"), index * 8)
            tx.wake()
        while int.from_bytes(os.pread(ack, 8, index * 8), "little") < done:
            time.sleep(rnd.choice((0, 0.0001, 0.0005)))
    print(json.dumps({"sent": tx.sent, "coalesced": tx.coalesced}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("awake", [False, True], ids=["drain", "park"])
def test_many_senders_never_lose_a_wake_up(address: str, tmp_path: Path, awake: bool) -> None:
    """`awake`: the receiver keeps the flag set while it works, as the worker does
    (drain without clearing, park before it sleeps)."""
    senders, events = 6, 2000
    counters, acks = tmp_path / "counters", tmp_path / "acks"
    counters.write_bytes(bytes(8 * senders))
    acks.write_bytes(bytes(8 * senders))
    rx = WakeReceiver(address)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, address, str(counters), str(acks), str(i), str(events)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(senders)
    ]
    seen = [0] * senders
    cf, af = os.open(counters, os.O_RDONLY), os.open(acks, os.O_RDWR)
    try:
        poller = select.poll()
        poller.register(rx.fileno(), select.POLLIN)

        def look() -> list[int]:
            raw = os.pread(cf, 8 * senders, 0)
            seen = [int.from_bytes(raw[i * 8 : i * 8 + 8], "little") for i in range(senders)]
            os.pwrite(af, b"".join(n.to_bytes(8, "little") for n in seen), 0)
            return seen

        while sum(seen) < senders * events:
            if awake and rx.park() is not None:  # as the worker's loop: park, look, sleep
                seen = look()
                if sum(seen) == senders * events:
                    break
            # Long enough that only a lost wake-up makes it run out.
            assert poller.poll(60_000), f"a wake-up was lost: seen {seen} of {events} each"
            rx.drain(clear=not awake)
            seen = look()
        stats = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        os.close(cf)
        os.close(af)
        rx.close()
    assert [p.returncode for p in procs] == [0] * senders
    assert seen == [events] * senders
    sent = sum(s["sent"] for s in stats)
    assert sum(s["coalesced"] for s in stats) + sent == senders * events
    assert sent < senders * events  # bursts were coalesced
