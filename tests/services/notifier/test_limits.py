"""The notifier's bounds on hostile clients: the outbox's byte limit (1013, then a lossless
resume, also by the command-line client's own stream), the connection cap per principal
(4429) and the open files limit."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed

from embedded.client import AsyncEventStream
from services.auth import DEFAULT_PRINCIPAL
from services.core.envelope import CLOSE_TOO_MANY_CONNECTIONS, CLOSE_TRY_AGAIN_LATER
from services.core.stream import reconnect_delays

LOCAL = DEFAULT_PRINCIPAL
BIG = "y" * 100_000  # one output line of 100 kB


def output_task(writer, lines: int):
    """A running task of "local" that printed `lines` events of one big line each."""
    first = writer.queued(LOCAL)
    events = [first, writer.started(first.task_id)]
    attempt = writer._attempts[first.task_id]
    for _ in range(lines):
        events.append(writer.store.output(first.task_id, attempt, [BIG]))
    return events


async def test_a_client_that_stops_reading_is_closed_at_the_byte_limit(
    start_notifier, open_client, writer, recv, start_session
):
    notifier = await start_notifier(max_outbox=1024 * 1024)
    ws = await open_client(notifier.url, max_size=None)
    await start_session(ws)
    ws.transport.pause_reading()  # the client reads nothing more for now
    events = output_task(writer, 1)
    task_id, attempt = events[0].task_id, writer._attempts[events[0].task_id]
    for _ in range(400):  # up to 40 MB, 100 kB at a time
        writer.wake()
        await asyncio.sleep(0.005)
        if notifier.connections == 0:
            break
        events.append(writer.store.output(task_id, attempt, [BIG]))
    assert notifier.connections == 0  # dropped: it was more than 1 MiB behind
    ws.transport.resume_reading()
    got = []
    with pytest.raises(ConnectionClosed):
        while True:
            msg = await recv(ws)
            got.append(msg["seq"])
    assert ws.close_code == CLOSE_TRY_AGAIN_LATER
    assert "1 MiB" in ws.close_reason and "reconnect with your last seq" in ws.close_reason
    assert got == [e.seq for e in events[: len(got)]]  # in order, a prefix
    assert len(got) < len(events)
    again = await open_client(notifier.url, since=got[-1], max_size=None)
    assert (await recv(again))["type"] == "welcome"
    rest = [(await recv(again))["seq"] for _ in range(len(events) - len(got))]
    assert got + rest == [e.seq for e in events]


async def test_the_client_stream_resumes_by_itself_after_1013_and_loses_nothing(
    start_notifier, tokens, writer
):
    # A 1-byte outbox: every burst of several events closes the connection.
    notifier = await start_notifier(max_outbox=1)
    stream = AsyncEventStream(notifier.url, tokens[LOCAL], since=0,
                              delays=lambda: reconnect_delays(first=0.01, cap=0.05))  # fmt: skip
    await stream.open()
    expected = []
    for _ in range(5):
        expected += writer.lifecycle(LOCAL, steps=3)
        writer.wake()
    seen = []
    welcomes = 0
    async with asyncio.timeout(20):
        async for msg in stream:
            if msg.type == "welcome":
                welcomes += 1
            if msg.event is not None:
                seen.append(msg.event.seq)
            if seen and seen[-1] == expected[-1].seq:
                break
    await stream.close()
    assert seen == [e.seq for e in expected]
    assert welcomes >= 1  # it was closed at least once, and came back


async def test_over_the_cap_a_connection_is_closed_with_4429(
    start_notifier, open_client, tokens, recv, start_session
):
    notifier = await start_notifier(max_connections=2)
    held = [await open_client(notifier.url) for _ in range(2)]
    for ws in held:
        await start_session(ws)
    extra = await open_client(notifier.url)
    with pytest.raises(ConnectionClosed):
        await recv(extra)
    assert extra.close_code == CLOSE_TOO_MANY_CONNECTIONS
    assert extra.close_reason == "too many connections: this principal already has 2 open"
    bobs = await open_client(notifier.url, token=tokens["bob"])
    await start_session(bobs)  # the cap is per principal
    await held[0].close()
    async with asyncio.timeout(5):
        while True:  # the slot is given back once the server has seen the close
            ws = await open_client(notifier.url)
            try:
                await start_session(ws)
                break
            except ConnectionClosed:
                await asyncio.sleep(0.02)


def test_the_notifier_raises_its_open_files_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit is too low to see a change")
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit("
        "resource.RLIMIT_NOFILE)[1]))\n"
        "from services.notifier.server import raise_open_files_limit\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out[0] == out[1] and int(out[0]) > 256
    if hard != resource.RLIM_INFINITY:
        assert int(out[0]) == hard
