"""The connection guard on a real server: a newcomer closes the connection that waited
longest without a request in progress, never a busy one; with every connection busy, the
newcomer waits in the kernel's queue until one ends. These also pin the aiohttp behaviour
`services.web.limits` relies on: `request.protocol` is the connection handler the site made
(through `connect_accepted_socket`), and the app's middleware runs on it."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.auth import ensure_install_token
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store.sqlite import TaskStore
from services.wake import WakeSender
from services.web.app import make_app
from services.web.limits import ConnectionGuard, GuardedSite, connection_cap, raise_fd_limit
from tests.services.web.conftest import build_catalog


async def _serve(
    layout: DataLayout, store: TaskStore, guard: ConnectionGuard
) -> AsyncIterator[tuple[int, str, GuardedSite]]:
    token = ensure_install_token(layout)
    wakes = [WakeSender(layout.wake_address(n)) for n in ("worker", "notifier")]
    app = make_app(layout, build_catalog(), store, TaskQueue(layout), *wakes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard=guard)
    await site.start()
    try:
        yield site.port, token, site
    finally:
        await runner.cleanup()
        for w in wakes:
            w.close()


@pytest.fixture
async def guarded(layout: DataLayout, store: TaskStore) -> AsyncIterator[tuple[int, str,
                                                                               GuardedSite]]:
    async for served in _serve(layout, store, ConnectionGuard(cap=3)):
        yield served


@pytest.fixture
async def kept_alive(
    layout: DataLayout, store: TaskStore
) -> AsyncIterator[tuple[int, str, GuardedSite]]:
    """A server whose idle connections go after 0.2 s, within 2 s more."""
    guard = ConnectionGuard(cap=50, keepalive_timeout=0.2, keepalive_grace=2.0)
    async for served in _serve(layout, store, guard):
        yield served


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                  if k.lower() == "content-length")  # fmt: skip
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return int(lines[0].split()[1]), json.loads(body)


def _get(port: int, path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode()  # fmt: skip


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionError, TimeoutError):
        return True


async def test_a_newcomer_closes_the_connection_waiting_longest(guarded: Any) -> None:
    port, token, site = guarded
    idle = [await _connect(port) for _ in range(2)]
    # A third that made a request and is kept alive: it waits too, but since later.
    kept = await _connect(port)
    kept[1].write(_get(port, "/api/tasks", token))
    assert (await _answer(kept[0]))[0] == 200
    assert site.guard.open == 3
    newcomer = await _connect(port)
    newcomer[1].write(_get(port, "/api/tasks", token))
    assert (await _answer(newcomer[0]))[0] == 200
    assert await _closed(idle[0][0])  # the oldest went
    assert site.guard.evicted == 1
    # The others still work.
    for reader, writer in (idle[1], kept):
        writer.write(_get(port, "/api/tasks", token))
        assert (await _answer(reader))[0] == 200
    for _, writer in (*idle, kept, newcomer):
        writer.close()


async def test_with_every_connection_busy_a_newcomer_waits_for_one(guarded: Any) -> None:
    """Busy connections are never closed for another: the newcomer is accepted when one of
    them ends (until then the kernel holds it)."""
    port, token, site = guarded
    busy = []
    for _ in range(3):  # submits whose bodies have not arrived: their requests are handled
        reader, writer = await _connect(port)
        writer.write((f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 100\r\n\r\n{").encode())  # fmt: skip
        busy.append((reader, writer))
    while site.guard._waiting or site.guard.open < 3:  # all three in their handlers
        await asyncio.sleep(0.01)
    reader, writer = await _connect(port)
    writer.write(_get(port, "/api/tasks", token))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    assert site.guard.evicted == 0
    # One busy connection ends: the newcomer is served; the others finish their submits.
    for _, w in busy:
        w.write(b'"task": "test.noop"}'.ljust(99))
    for r, w in busy:
        status, body = await _answer(r)
        assert status == 202, body
        w.close()
    status, body = await _answer(reader)
    assert status == 200, body
    writer.close()


def test_the_cap_stays_below_the_fd_limit() -> None:
    for limit in (64, 256, 1024, 4096, 1_048_576):
        cap = connection_cap(limit)
        assert 0 < cap < limit
    assert connection_cap(1024) <= 1024 - 64  # room for the databases, logs, sockets
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit() >= soft


async def _ended(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (within 10 s)."""
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionError:
        return True


async def test_idle_connections_are_closed_together_never_a_busy_one(kept_alive: Any) -> None:
    """The keepalive is one sweep for every connection: the connections idle past the
    timeout are closed in one wake-up (not a timer each), and one whose request is being
    handled is never closed by it."""
    port, token, site = kept_alive
    busy = await _connect(port)  # a submit whose body has not arrived: being handled
    busy[1].write((f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                   "Content-Length: 100\r\n\r\n{").encode())  # fmt: skip
    idle = [await _connect(port) for _ in range(5)]
    for reader, writer in idle:
        writer.write(_get(port, "/api/tasks", token))
        assert (await _answer(reader))[0] == 200
    for reader, _ in idle:
        assert await _ended(reader)
    assert site.guard.idle_closed == 5
    assert site.guard.sweeps == 1
    busy[1].write(b'"task": "test.noop"}'.ljust(99))
    status, body = await _answer(busy[0])
    assert status == 202, body
    # Idle again, it goes too, in a sweep of its own.
    assert await _ended(busy[0])
    assert site.guard.idle_closed == 6 and site.guard.sweeps == 2
    for _, writer in (busy, *idle):
        writer.close()
