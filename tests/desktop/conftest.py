"""Qt tests on a qasync loop: one loop for the session, marked running during each test.

pytest-qt drives the Qt event loop (qtbot.wait, waitSignal, waitUntil), and qasync runs
asyncio callbacks from that same loop, so aiohttp and websockets work inside GUI tests. The
loop is never stopped between tests (stopping it quits the QApplication), and it is only
marked as the running loop during a Qt test, so the pytest-asyncio tests of other folders
still get loops of their own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import qasync  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


@pytest.fixture(scope="session")
def qasync_loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.events._set_running_loop(None)  # only during Qt tests, see below
    yield loop


@pytest.fixture
def aloop(qasync_loop: asyncio.AbstractEventLoop, qtbot) -> Iterator[asyncio.AbstractEventLoop]:
    """The qasync loop, running for the duration of the test; leftovers cancelled after."""
    asyncio.events._set_running_loop(qasync_loop)
    asyncio.set_event_loop(qasync_loop)
    before = asyncio.all_tasks(qasync_loop)
    try:
        yield qasync_loop
    finally:
        leftovers = asyncio.all_tasks(qasync_loop) - before
        for task in leftovers:
            task.cancel()
        if leftovers:
            qtbot.waitUntil(lambda: all(t.done() for t in leftovers), timeout=5000)
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(None)
