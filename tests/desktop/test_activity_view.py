"""The activity view on real services: empty at first, then the real finished tasks drawn
(bars that add up to the API's counts, in the outcomes' colours), the tooltip, and the
per-type run times; plus the chart's time labels and tooltip for a day's buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QApplication, QToolTip

from desktop.ui.activity_view import OUTCOMES, ActivityView, outcome_color
from tests.desktop.test_app import WAIT, running, runtime  # noqa: F401 (fixtures)


def tooltip_at(qtbot, chart, index: int) -> str:
    """Hover bucket `index` as a user would and read the tooltip Qt shows."""
    pos = chart.column_center(index).toPoint()
    qtbot.mouseMove(chart, pos)
    QApplication.sendEvent(chart, QHelpEvent(QEvent.Type.ToolTip, pos, chart.mapToGlobal(pos)))
    qtbot.waitUntil(QToolTip.isVisible, timeout=WAIT)
    return QToolTip.text()


def test_the_view_draws_the_real_history(running, qtbot):  # noqa: F811 (the fixture)
    w = running.window
    view = w.activity_view
    assert "Ctrl+Shift+A" in w.activity_action.shortcut().toString()
    w.activity_action.trigger()  # View > Activity
    qtbot.waitUntil(lambda: view.isVisible() and view.refreshes >= 1, timeout=WAIT)
    # Nothing has finished yet: the empty state.
    assert view.chart.empty and view.chart.segments == []
    assert view.summary.text() == "No tasks finished in the last hour"
    assert view.durations.isHidden() and not view.durations_hint.isHidden()

    ok = [running.run_task("demo.answer", seconds=0) for _ in range(3)]
    failed = running.run_task("demo.answer", time_limit=0.5, seconds=30)
    cancelled = running.run_task("demo.answer", seconds=60)
    running.wait_state(cancelled, "running")
    w.select_task(cancelled)
    w.cancel_action.trigger()
    for task_id in ok:
        running.wait_state(task_id, "succeeded")
    running.wait_state(failed, "failed")
    running.wait_state(cancelled, "cancelled")
    # It refreshed by itself as they finished (throttled), to the ledger's numbers.
    expected = {"succeeded": 3, "failed": 1, "cancelled": 1}
    qtbot.waitUntil(lambda: view.chart.totals() == expected, timeout=WAIT)
    body = view.body
    assert body["totals"] == expected and len(body["buckets"]) == 60

    image = view.chart.grab().toImage()  # paints it, filling `segments`
    drawn = {o: 0 for o in OUTCOMES}
    for index, outcome, count, rect in view.chart.segments:
        assert body["buckets"][index][outcome] == count
        drawn[outcome] += count
        colour = image.pixelColor(rect.center().toPoint())
        assert colour == outcome_color(outcome, view.chart.palette()), outcome
    assert drawn == expected
    # Bars are to scale: a count of 2 is twice as tall as a count of 1.
    unit = {rect.height() / count for _i, _o, count, rect in view.chart.segments}
    assert max(unit) - min(unit) < 1.5, unit
    assert view.summary.text() == ("5 finished in the last hour: 3 succeeded, 1 failed, "
                                   "1 cancelled")  # fmt: skip

    busiest = max(range(60), key=lambda i: sum(body["buckets"][i][o] for o in OUTCOMES))
    counts = body["buckets"][busiest]
    text = tooltip_at(qtbot, view.chart, busiest)
    assert view.chart.hovered == busiest
    start = datetime.fromisoformat(counts["start"].replace("Z", "+00:00")).astimezone()
    assert text.splitlines() == [
        f"{start:%H:%M}–{start + timedelta(minutes=1):%H:%M}",
        f"Succeeded: {counts['succeeded']}",
        f"Failed: {counts['failed']}",
        f"Cancelled: {counts['cancelled']}",
    ]

    table = view.durations
    assert not table.isHidden() and table.rowCount() == 1
    assert table.item(0, 0).text() == "The answer" and table.item(0, 0).toolTip() == "demo.answer"
    assert [table.item(0, c).text() for c in range(1, 5)] == ["5", "3", "1", "1"]
    assert table.item(0, 5).text() != "–" and "over 5 runs" in table.item(0, 7).toolTip()

    # The day, in quarters: the same tasks, other buckets.
    view.set_window("day", 900)
    qtbot.waitUntil(lambda: view.body["window"] == "day" and view.body["bucket"] == 900,
                    timeout=WAIT)  # fmt: skip
    assert len(view.body["buckets"]) == 96 and view.chart.totals() == expected


def test_a_day_of_buckets_labels_round_hours_and_names_the_day(qtbot):
    view = ActivityView()
    qtbot.addWidget(view)
    view.resize(900, 500)
    end = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
    buckets = [{"start": (end - timedelta(hours=24 - i)).isoformat().replace("+00:00", "Z"),
                "succeeded": i % 3, "failed": 1 if i == 20 else 0, "cancelled": 0}
               for i in range(24)]  # fmt: skip
    view.set_activity({"window": "day", "bucket": 3600, "buckets": buckets,
                       "tasks": [{"task": "x", "n": 1, "succeeded": 1, "failed": 0,
                                  "cancelled": 0, "timed": 1, "p50": 0.04, "p95": 12.5,
                                  "max": 12.5}]})  # fmt: skip
    view.show()
    qtbot.waitExposed(view)
    view.chart.grab()
    start = datetime.fromisoformat(buckets[20]["start"].replace("Z", "+00:00")).astimezone()
    assert view.chart.tooltip_text(20).splitlines() == [
        f"{start:%a %H:%M}–{start + timedelta(hours=1):%H:%M}",
        "Succeeded: 2", "Failed: 1", "Cancelled: 0",
    ]
    assert sum(c for _i, _o, c, _r in view.chart.segments) == sum(i % 3 for i in range(24)) + 1
    assert view.chart.bucket_at(view.chart.column_center(20)) == 20
    assert view.chart.bucket_at(QPoint(1, 1).toPointF()) is None  # the title, not a bar
    assert [view.durations.item(0, c).text() for c in (5, 6)] == ["40 ms", "12 s"]
    # The summary says what the chart holds, for screen readers too.
    assert view.chart.accessibleDescription() == view.summary.text()
    assert Qt.AlignmentFlag.AlignRight & view.durations.item(0, 1).textAlignment()


def test_finished_tasks_refresh_it_at_most_every_two_seconds(aloop, qtbot):
    calls: list[tuple[str, int | None]] = []

    async def fetch(window: str, bucket: int | None) -> dict:
        calls.append((window, bucket))
        return {"window": window, "bucket": bucket or 60, "buckets": [], "tasks": []}

    view = ActivityView()
    qtbot.addWidget(view)
    view.note_task_finished()  # hidden: nothing to draw, nothing loaded
    view.set_source(fetch)
    assert calls == []
    view.show()  # shown: it loads at once
    qtbot.waitUntil(lambda: view.refreshes == 1, timeout=WAIT)
    assert calls == [("hour", None)] and view.chart.empty
    for _ in range(50):  # a burst of tasks finishing: one refresh, REFRESH_INTERVAL later
        view.note_task_finished()
    assert len(calls) == 1 and view._throttle.isActive()
    assert view._throttle.remainingTime() > 1000
    qtbot.waitUntil(lambda: view.refreshes == 2, timeout=WAIT)
    assert len(calls) == 2 and not view._throttle.isActive()
    # Choosing another window loads it at once.
    view.set_window("day", 900)
    qtbot.waitUntil(lambda: view.refreshes == 3, timeout=WAIT)
    assert calls[-1] == ("day", 900)
