"""Quitting with tasks running, through the window's own dialog, and the live watchdog.

Each quit branch is driven as a user would: the window's close button or Ctrl+Q, then a
click on one of the dialog's buttons. The dialog is found among the window's children by a
timer, so the click lands even if something ran the dialog in a nested event loop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from services.core.states import TaskState
from services.store import TaskStore
from tests.desktop import test_app as base
from tests.e2e.harness import pid_alive

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, sends signals")

runtime = base.runtime  # the fixture, for this module's tests
QUICK = 5_000  # ms: what "within seconds" means for each quit branch, from the click


_OTHERS: set[int] = set()  # below this process before the test began (not the app's)


@pytest.fixture(autouse=True)
def _not_the_apps() -> None:
    """What other tests of the session left running below this process (the session's
    redis-server, say) is neither counted nor killed here: it is not the app's."""
    global _OTHERS
    _OTHERS = set()
    _OTHERS = descendants()


def descendants() -> set[int]:
    """Every live process below this one (services, the worker's attempt processes) that
    the test started."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {p for p in found if pid_alive(p)} - _OTHERS


def click_when_shown(window, text: str) -> list[QMessageBox]:
    """Click the button labelled `text` of the window's message box once it has been
    showing for half a second (as a person reads it, while the tasks report progress);
    returns a list that holds the box once clicked."""
    clicked: list[QMessageBox] = []
    timer = QTimer(window, interval=20)
    seen: list[float] = []

    def poll() -> None:
        for box in window.findChildren(QMessageBox):
            if not box.isVisible():
                continue
            seen.append(time.monotonic())
            if seen[-1] - seen[0] < 0.5:
                return
            for button in box.buttons():
                if button.text() == text:
                    timer.stop()
                    clicked.append(box)
                    button.click()
                    return

    timer.timeout.connect(poll)
    timer.start()
    return clicked


@pytest.fixture
def app(tmp_path: Path, runtime: Path, aloop, qtbot) -> Iterator[base.Running]:
    r = base.Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    started = descendants()
    yield r
    if not r.task.done():  # a branch that hung: do not leave services behind
        r.app._quitting = False
        try:
            r.quit()
        finally:
            for pid in started | descendants():
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def start_long_tasks(r: base.Running) -> list[str]:
    ids = [r.run_task("demo.answer", seconds=120) for _ in range(2)]
    r.wait_state(ids[0], "running")
    return ids


def ledger_states(r: base.Running, ids: list[str]) -> list[TaskState]:
    store = TaskStore(r.app.data_dir / "herald.db")
    try:
        return [store.get_task(i).state for i in ids]
    finally:
        store.close()


def test_quit_and_run_them_next_time_ends_at_once(app, qtbot):
    ids = start_long_tasks(app)
    children = descendants()
    assert len(children) >= 4  # three services and an attempt's process
    clicked = click_when_shown(app.window, "Quit, run them next time")
    app.window.close()  # the window's close button asks first
    qtbot.waitUntil(lambda: bool(clicked), timeout=QUICK)
    qtbot.waitUntil(app.task.done, timeout=QUICK)
    assert app.task.result() == 0
    qtbot.waitUntil(lambda: not any(pid_alive(p) for p in children), timeout=QUICK)
    # Not lost: put back in the queue, to run the next time Herald opens.
    assert all(s in (TaskState.QUEUED, TaskState.RUNNING) for s in ledger_states(app, ids))


def test_cancel_them_and_quit_cancels_first(app, qtbot):
    ids = start_long_tasks(app)
    children = descendants()
    clicked = click_when_shown(app.window, "Cancel them and quit")
    app.window.activateWindow()  # a shortcut needs its window active
    qtbot.waitUntil(app.window.isActiveWindow, timeout=QUICK)
    qtbot.keyClick(app.window.table, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: bool(clicked), timeout=QUICK)
    qtbot.waitUntil(app.task.done, timeout=QUICK)
    assert app.task.result() == 0
    qtbot.waitUntil(lambda: not any(pid_alive(p) for p in children), timeout=QUICK)
    assert ledger_states(app, ids) == [TaskState.CANCELLED, TaskState.CANCELLED]


def test_keep_herald_open_keeps_the_view_live(app, qtbot):
    short = app.run_task("demo.answer", seconds=2)
    app.wait_state(short, "running")
    clicked = click_when_shown(app.window, "Keep Herald open")
    app.window.quit_action.trigger()  # the File menu's Quit (and the tray's)
    qtbot.waitUntil(lambda: bool(clicked), timeout=QUICK)
    # The task started before finishes, and the table hears of it.
    app.wait_state(short, "succeeded")
    assert app.live and not app.task.done()
    again = app.run_task("demo.answer", seconds=0)
    app.wait_state(again, "succeeded")


@pytest.mark.slow
def test_quit_while_the_notifier_is_frozen_still_ends(app, qtbot):
    """A notifier that stopped answering must not hold up the quit (bounded waits)."""
    start_long_tasks(app)
    children = descendants()
    notifier = app.app.monitor._supervisor.pid("notifier")
    os.kill(notifier, signal.SIGSTOP)
    try:
        clicked = click_when_shown(app.window, "Quit, run them next time")
        app.window.close()
        qtbot.waitUntil(lambda: bool(clicked), timeout=QUICK)
        qtbot.waitUntil(app.task.done, timeout=3 * QUICK)
    finally:
        if pid_alive(notifier):
            os.kill(notifier, signal.SIGCONT)
    qtbot.waitUntil(lambda: not any(pid_alive(p) for p in children), timeout=QUICK)


def test_the_live_light_says_stalled_when_the_notifier_stops_answering(
        tmp_path, runtime, aloop, qtbot, monkeypatch):  # fmt: skip
    import desktop.bridge

    monkeypatch.setattr(desktop.bridge, "STALL_AFTER", 1.0)
    r = base.Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    try:
        light = r.window.lights.connection
        notifier = r.app.monitor._supervisor.pid("notifier")
        os.kill(notifier, signal.SIGSTOP)
        try:
            qtbot.waitUntil(lambda: light.state == "stalled", timeout=10_000)
            assert "stalled" in light.text()
        finally:
            os.kill(notifier, signal.SIGCONT)
        qtbot.waitUntil(lambda: light.state == "connected", timeout=10_000)
        task_id = r.run_task("demo.answer", seconds=0)  # and events flow again
        r.wait_state(task_id, "succeeded")
    finally:
        r.quit()
