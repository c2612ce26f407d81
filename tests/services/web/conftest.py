"""A real web app on 127.0.0.1 (port 0) over real SQLite files, and a client to call it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.auth import create_principal, ensure_install_token
from services.core.params import Param, ParamType
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store.sqlite import TaskStore
from services.tasks.catalog import Catalog
from services.wake import WakeReceiver, WakeSender
from services.web.app import make_app
from services.web.limits import GuardedSite

MAX_ATTEMPTS = 3


def build_catalog() -> Catalog:
    """A catalog of test tasks (its own instance: the built-in tasks are not needed)."""
    catalog = Catalog()

    @catalog.task(
        "test.echo",
        title="Echo",
        params=[
            Param("text", ParamType.STRING, maximum=20),
            Param("count", ParamType.INTEGER, default=1, minimum=1, maximum=5),
            Param("loud", ParamType.BOOLEAN, default=False),
        ],
        retries=2,
        max_lost=5,
        timeout=30,
        max_timeout=60,
    )
    def echo(ctx: Any, text: str, count: int, loud: bool) -> str:
        return text * count

    @catalog.task("test.noop", title="Nothing",
                  display={"summary": "{n:count:thing}", "fields": [{"key": "n", "type": "count"}]})
    def noop(ctx: Any) -> None:
        return None

    @catalog.task(
        "test.pick",
        title="Pick",
        params=[Param("colour", ParamType.CHOICE, choices=("red", "blue"))],
        max_lost=1,
    )
    def pick(ctx: Any, colour: str) -> str:
        return colour

    return catalog


@dataclass
class Response:
    """What a test looks at: status, headers and the decoded JSON body."""

    status: int
    headers: Any
    body: Any


@dataclass
class Api:
    """A running web app and a client session to it."""

    base: str
    port: int
    token: str
    other_token: str
    layout: DataLayout
    store: TaskStore
    queue: TaskQueue
    worker_rx: WakeReceiver
    notifier_rx: WakeReceiver

    async def woken(self, rx: WakeReceiver, timeout: float = 2.0) -> list[bytes]:
        """The wake-ups `rx` receives within `timeout`, waiting without blocking the loop
        (the app wakes the notifier from a timer of this same loop)."""
        deadline = asyncio.get_running_loop().time() + timeout
        got = rx.drain()
        while not got and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
            got = rx.drain()
        return got
    session: aiohttp.ClientSession
    app: web.Application

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "default",
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        skip_auto_headers: tuple[str, ...] = (),
    ) -> Response:
        """One request; `token="default"` uses the install's token, None sends none."""
        hdrs = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, data=data, headers=hdrs, skip_auto_headers=skip_auto_headers
        ) as r:
            raw = await r.read()
            if r.status == 204:
                assert raw == b""
                return Response(r.status, r.headers, None)
            assert r.headers.get("Content-Type", "").startswith("application/json"), raw[:200]
            return Response(r.status, r.headers, json.loads(raw))

    async def submit(self, task: str = "test.echo", args: Any = None, **kw: Any) -> Response:
        body: dict[str, Any] = {"task": task}
        if args is not None:
            body["args"] = args
        return await self.call("POST", "/api/tasks", json_body=body, **kw)


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


@pytest.fixture
def store(layout: DataLayout) -> Iterator[TaskStore]:
    layout.root.mkdir(parents=True, exist_ok=True)
    s = TaskStore(layout.ledger_db)
    yield s
    s.close()


@pytest.fixture
async def api(layout: DataLayout, store: TaskStore) -> AsyncIterator[Api]:
    token = ensure_install_token(layout)
    other = create_principal(layout, "bob")
    queue = TaskQueue(layout)
    worker_rx = WakeReceiver(layout.wake_address("worker"))
    notifier_rx = WakeReceiver(layout.wake_address("notifier"))
    worker_wake = WakeSender(layout.wake_address("worker"))
    notifier_wake = WakeSender(layout.wake_address("notifier"))
    app = make_app(
        layout,
        build_catalog(),
        store,
        queue,
        worker_wake,
        notifier_wake,
        max_lost=MAX_ATTEMPTS,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0)  # as the web service serves it
    await site.start()
    port = site.port
    session = aiohttp.ClientSession()
    try:
        yield Api(
            f"http://127.0.0.1:{port}",
            port,
            token,
            other,
            layout,
            store,
            queue,
            worker_rx,
            notifier_rx,
            session,
            app,
        )
    finally:
        await session.close()
        await runner.cleanup()
        for closeable in (worker_wake, notifier_wake, worker_rx, notifier_rx):
            closeable.close()
