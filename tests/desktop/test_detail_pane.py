"""The detail pane: its header and timeline for retries, time limits and forced cancels,
with task dicts kept current by `services.core.taskview` as the app's model keeps them."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import pytest

from desktop.ui.detail_pane import DetailPane
from services.core import taskview
from services.core.events import Event, EventType


class Task:
    """One task, its events recorded in order and applied through taskview."""

    def __init__(self, task_id: str = "t1", **queued) -> None:
        self.id = task_id
        self._seq = itertools.count(1)
        self.events: list[Event] = []
        self.task: dict | None = None
        self.add(EventType.QUEUED, 0, name="demo.answer", args={"seconds": 3}, **queued)

    def add(self, etype: EventType, attempt: int, /, **data) -> Event:
        ev = Event(next(self._seq), self.id, "", etype, time.time(), attempt, data)
        self.events.append(ev)
        self.task = taskview.apply_event(self.task, ev)
        return ev

    def fail_and_wait(self, delay: float = 8.0) -> Event:
        self.add(EventType.STARTED, 1, attempt=1, timeout=30)
        return self.add(EventType.RETRYING, 1, reason="failed", next_attempt=2, delay=delay,
                        at=time.time() + delay, max_attempts=3, lost_attempts=1,
                        error={"code": "exception", "message": "OSError: disk busy"})


@pytest.fixture
def pane(qtbot) -> DetailPane:
    widget = DetailPane()
    qtbot.addWidget(widget)
    return widget


def show(pane: DetailPane, t: Task) -> None:
    pane.show_task(t.task, "The answer", t.events, [])


def timeline(pane: DetailPane) -> list[tuple[str, str]]:
    """(event, details) of each timeline row."""
    rows = (pane.timeline.topLevelItem(i) for i in range(pane.timeline.topLevelItemCount()))
    return [(item.text(1), item.text(2)) for item in rows]


def test_the_header_of_a_task_waiting_for_a_retry(pane):
    t = Task(timeout=30)
    t.fail_and_wait(8)
    show(pane, t)
    header = pane.header.text()
    assert "— queued · attempt 2 of 3, next try in 8 s · time limit 30 s · 1 attempt lost" \
        in header  # fmt: skip
    assert pane.countdown_ticking()
    assert pane.header.toolTip().startswith("Attempt 2 of 3, next try in 8 s (at ")
    at = datetime.fromtimestamp(taskview.parse_time(t.task["next_attempt_at"]))
    assert pane.result.toPlainText() == ("Attempt 1 failed: OSError: disk busy\n"
                                         f"Attempt 2 of 3 runs at {at:%H:%M:%S}.")  # fmt: skip
    t.add(EventType.STARTED, 2, attempt=2, timeout=30)
    show(pane, t)
    assert "running · attempt 2 of 3 · time limit 30 s · 1 attempt lost" in pane.header.text()
    assert not pane.countdown_ticking() and pane.header.toolTip() == ""


def test_the_header_countdown_stays_current(pane, qtbot):
    pane._countdown.setInterval(20)
    t = Task()
    t.fail_and_wait(1.5)
    show(pane, t)
    assert "next try in 2 s" in pane.header.text()
    qtbot.waitUntil(lambda: "next try in 1 s" in pane.header.text(), timeout=3000)
    qtbot.waitUntil(lambda: "next try now" in pane.header.text(), timeout=3000)
    pane.clear()
    assert not pane.countdown_ticking()


def test_an_unknown_number_of_attempts_is_not_shown_as_none(pane):
    t = Task()
    t.add(EventType.STARTED, 2, attempt=2)  # a dict built from events: max_attempts unknown
    assert t.task["max_attempts"] is None
    show(pane, t)
    assert "attempt 2" in pane.header.text() and "None" not in pane.header.text()
    first = Task("t2")
    first.add(EventType.STARTED, 1, attempt=1)
    show(pane, first)
    assert "attempt" not in pane.header.text()  # one attempt of one: nothing to say


def test_the_timeline_tells_retries_limits_and_forced_cancels(pane):
    t = Task()
    t.fail_and_wait(8)
    t.add(EventType.STARTED, 2, attempt=2, timeout=30)
    t.add(EventType.RETRYING, 2, reason="worker_lost", next_attempt=3, delay=0, at=None,
          max_attempts=4, lost_attempts=1, detail="killed by SIGSEGV")
    t.add(EventType.STARTED, 3, attempt=3, timeout=30)
    t.add(EventType.CANCEL_REQUESTED, 3)
    t.add(EventType.CANCELLED, 3, forced=True, grace=5,
          reason="stopped by force after 5 s: it did not stop at a checkpoint")
    show(pane, t)
    assert timeline(pane)[1:] == [
        ("started", "Attempt 1 started (time limit 30 s)"),
        ("retrying", "Attempt 1 failed: OSError: disk busy; retrying in 8 s (attempt 2 of 3)"),
        ("started", "Attempt 2 started (time limit 30 s)"),
        ("retrying", "Worker lost (killed by SIGSEGV); retrying (attempt 3 of 4)"),
        ("started", "Attempt 3 started (time limit 30 s)"),
        ("cancel_requested", "Asked to stop"),
        ("cancelled", "Stopped by force after 5 s: it did not stop at a checkpoint"),
    ]  # fmt: skip
    assert pane.result.toPlainText() == (
        "Cancelled: stopped by force after 5 s: it did not stop at a checkpoint.")


def test_a_timed_out_task(pane):
    t = Task(timeout=30)
    t.add(EventType.STARTED, 1, attempt=1, timeout=30)
    t.add(EventType.FAILED, 1, error={"code": "timeout", "timeout": 30,
                                      "message": "Timed out after 30 s; the attempt was stopped."})
    show(pane, t)
    assert timeline(pane)[-1] == ("failed", "Timed out after 30 s; the attempt was stopped")
    assert "— failed · time limit 30 s" in pane.header.text()
    # the message in words; its code is in the error view, not in front of it
    assert pane.result.toPlainText() == "Timed out after 30 s; the attempt was stopped."
    assert pane.error_view.code.text() == "Code: timeout"
