"""The web wakes the worker after a task's message is in the queue, never before, and once
per burst: a real app, real SQLite files, a real wake-up socket and its pending flag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.auth import ensure_install_token
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store.sqlite import TaskStore
from services.wake import WakeReceiver, WakeSender
from services.web.app import make_app
from services.web.limits import GuardedSite
from tests.services.web.conftest import build_catalog


class WatchedQueue(TaskQueue):
    """A real queue that notes, as each message lands, what the worker had been sent."""

    def __init__(self, layout: DataLayout, worker: WakeReceiver) -> None:
        super().__init__(layout)
        self.worker = worker
        self.sent_before: list[list[bytes]] = []

    def enqueue(self, task_id: str) -> None:
        self.sent_before.append(self.worker.drain(clear=False))
        super().enqueue(task_id)

    def try_enqueue(self, task_id: str) -> bool:  # the web's loop, after a quiet moment
        self.sent_before.append(self.worker.drain(clear=False))
        return super().try_enqueue(task_id)


@pytest.fixture
async def served(layout: DataLayout, store: TaskStore) -> AsyncIterator[dict[str, Any]]:
    token = ensure_install_token(layout)
    worker = WakeReceiver(layout.wake_address("worker"))
    queue = WatchedQueue(layout, worker)
    wakes = [WakeSender(layout.wake_address(n)) for n in ("worker", "notifier")]
    app = make_app(layout, build_catalog(), store, queue, *wakes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0)
    await site.start()
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})

    async def submit() -> str:
        async with session.post(f"http://127.0.0.1:{site.port}/api/tasks",
                                json={"task": "test.noop"}) as r:  # fmt: skip
            assert r.status == 202
            return (await r.json())["id"]

    try:
        yield {"submit": submit, "worker": worker, "queue": queue, "sender": wakes[0]}
    finally:
        await session.close()
        await runner.cleanup()
        for w in wakes:
            w.close()
        worker.close()


async def test_the_worker_is_woken_after_the_enqueue_and_once_per_burst(served) -> None:
    submit, worker, queue = served["submit"], served["worker"], served["queue"]
    first = await submit()
    assert queue.sent_before == [[]]  # nothing was sent before its message landed
    assert worker.drain(clear=False) == [b"!" + first.encode()]  # after it: names it
    # The worker has not cleared its flag (it is "awake"): the burst sends nothing more,
    # and nothing is needed, since it reads the whole queue before it sleeps.
    burst = [await submit() for _ in range(20)]
    assert worker.drain(clear=False) == []
    assert queue.sent_before == [[]] * 21
    assert (served["sender"].sent, served["sender"].coalesced) == (1, 20)
    assert worker.park() == []  # before sleeping: clears the flag...
    assert [queue.dequeue() for _ in range(22)] == [first, *burst, None]  # ...and reads
    last = await submit()  # after the clear: sent again, after its enqueue
    assert queue.sent_before[-1] == [] and worker.drain() == [b"!" + last.encode()]
