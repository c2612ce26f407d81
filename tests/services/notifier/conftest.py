"""Fixtures for the notifier tests: a data dir with two principals, a writer that records
events in the real SQLite store and wakes the notifier, a running in-process notifier, and
a WebSocket client factory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from services.auth import DEFAULT_PRINCIPAL, create_principal, ensure_install_token
from services.core.events import Event
from services.core.states import TaskState
from services.layout import DataLayout
from services.notifier.server import Notifier
from services.store.sqlite import TaskStore
from services.wake import WakeReceiver, WakeSender

# The web service's port as far as Origin checks go; nothing listens there.
WEB_PORT = 45678
RECV_TIMEOUT = 5.0


@pytest.fixture
def web_port() -> int:
    return WEB_PORT


@pytest.fixture
def layout(tmp_path) -> DataLayout:
    root = tmp_path / "data"
    root.mkdir(mode=0o700)
    return DataLayout(root)


@pytest.fixture
def tokens(layout) -> dict[str, str]:
    """Principal -> token: the install's own ("local") and a second one ("bob")."""
    return {DEFAULT_PRINCIPAL: ensure_install_token(layout), "bob": create_principal(layout, "bob")}


class Writer:
    """Records task events the way the web service and the worker do, then wakes."""

    def __init__(self, layout: DataLayout) -> None:
        self.store = TaskStore(layout.ledger_db)
        self.sender = WakeSender(layout.wake_address("notifier"))
        self._attempts: dict[str, int] = {}

    def queued(self, principal: str, name: str = "demo") -> Event:
        _, ev = self.store.create_task(principal=principal, name=name, args={"n": 1})
        assert ev is not None
        return ev

    def started(self, task_id: str) -> Event:
        rec, ev = self.store.claim(task_id, "test-worker", lease_seconds=60)
        assert rec is not None and ev is not None
        self._attempts[task_id] = rec.attempt
        return ev

    def progress(self, task_id: str, fraction: float, message: str = "working") -> Event:
        ev = self.store.progress(task_id, self._attempts[task_id], fraction, message)
        assert ev is not None
        return ev

    def succeeded(self, task_id: str, result: Any = "done") -> Event:
        ev = self.store.finish(task_id, self._attempts[task_id], TaskState.SUCCEEDED,
                               result=result)  # fmt: skip
        assert ev is not None
        return ev

    def lifecycle(self, principal: str, steps: int = 2) -> list[Event]:
        """A whole task: queued, started, `steps` progress events, succeeded."""
        first = self.queued(principal)
        events = [first, self.started(first.task_id)]
        events += [self.progress(first.task_id, (i + 1) / (steps + 1)) for i in range(steps)]
        events.append(self.succeeded(first.task_id))
        return events

    def wake(self) -> None:
        self.sender.wake()

    def close(self) -> None:
        self.sender.close()
        self.store.close()


@pytest.fixture
def writer(layout, tokens) -> Iterator[Writer]:
    w = Writer(layout)
    yield w
    w.close()


NotifierFactory = Callable[..., Awaitable[Notifier]]


@pytest.fixture
async def start_notifier(layout, tokens) -> AsyncIterator[NotifierFactory]:
    """Start an in-process notifier on 127.0.0.1 port 0 (options go to `Notifier`)."""
    from services.auth import Authenticator

    started: list[tuple[Notifier, TaskStore, WakeReceiver]] = []

    async def start(**options: Any) -> Notifier:
        options.setdefault("web_port", WEB_PORT)
        store = TaskStore(layout.ledger_db)
        receiver = WakeReceiver(layout.wake_address("notifier"))
        notifier = Notifier(store, Authenticator(layout), receiver, **options)
        started.append((notifier, store, receiver))
        await notifier.start()
        return notifier

    yield start
    for notifier, store, receiver in started:
        await notifier.stop()
        receiver.close()
        store.close()


@pytest.fixture
async def notifier(start_notifier) -> Notifier:
    return await start_notifier()


ClientFactory = Callable[..., Awaitable[ClientConnection]]


@pytest.fixture
async def open_client(tokens) -> AsyncIterator[ClientFactory]:
    """Open a WebSocket to a notifier: `await open_client(url, token=..., since=...)`.

    `token` defaults to the install's own; pass `token=None` to send none. `headers` are
    added to the handshake; `since` is sent as the Herald-Since header.
    """
    opened: list[ClientConnection] = []

    async def open_(
        url: str,
        *,
        token: str | None = tokens[DEFAULT_PRINCIPAL],
        since: int | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientConnection:
        extra = dict(headers or {})
        if token is not None:
            extra["Authorization"] = f"Bearer {token}"
        if since is not None:
            extra["Herald-Since"] = str(since)
        ws = await connect(url, additional_headers=extra, proxy=None, open_timeout=5, **kwargs)
        opened.append(ws)
        return ws

    yield open_
    for ws in opened:
        await ws.close()


async def receive(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    """The next server message, decoded (fails the test if none comes in time)."""
    async with asyncio.timeout(timeout):
        text = await ws.recv()
    return json.loads(text)


@pytest.fixture
def recv() -> Callable[..., Awaitable[dict[str, Any]]]:
    return receive


@pytest.fixture
def recv_events(recv) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """Receive exactly `n` messages, asserting each is an event; returns them."""

    async def get(ws: ClientConnection, n: int, timeout: float = RECV_TIMEOUT) -> list[dict]:
        out = []
        for _ in range(n):
            msg = await recv(ws, timeout)
            assert msg["type"] == "event", msg
            out.append(msg)
        return out

    return get


@pytest.fixture
def start_session(recv) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Read the welcome and expect nothing to replay: returns the welcome."""

    async def get(ws: ClientConnection) -> dict[str, Any]:
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        caught_up = await recv(ws)
        assert caught_up["type"] == "caught_up", caught_up
        return welcome

    return get
