"""The activity view: tasks finished per minute (or hour, or quarter) by outcome, and how
long each task type runs, drawn from `GET /api/activity` (the whole history, computed by the
server, not the rows the task model happens to hold).

`ActivityChart` paints stacked bars with QPainter (QtCharts would add PySide6-Addons to the
bundle): axes with labels, a legend, a hover highlight and a tooltip with the bucket's counts.
`DurationTable` lists each task type's counts and p50/p95 run times, with bars.
`ActivityView` puts them together with the window toggle and refreshes itself, at most every
REFRESH_INTERVAL, when tasks finish while it is shown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QPersistentModelIndex, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QHelpEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from services.core.retry import format_seconds

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "failed", "cancelled")  # stacked from the bottom in this order
OUTCOME_LABELS = {"succeeded": "Succeeded", "failed": "Failed", "cancelled": "Cancelled"}
# Each outcome's colour on a light and on a dark background: the status bar's green, the
# form's error red, a neutral grey for what the user stopped. Each keeps at least 3:1 contrast
# with its background (bars are large shapes), and the three differ in lightness as well as
# in hue, for colour-blind eyes.
_COLOURS = {
    "succeeded": ("#2e9d4f", "#4cc36b"),
    "failed": ("#c62828", "#ff6b6b"),
    "cancelled": ("#7b8089", "#a3a9b3"),
}
REFRESH_INTERVAL = 2.0  # s: the least time between two refreshes when tasks finish
SLIDE_INTERVAL = 30_000  # ms: a shown view refreshes this often anyway (the window slides)
WINDOWS = {"hour": "Last hour", "day": "Last day"}
DAY_BUCKETS = ((3600, "per hour"), (900, "per 15 min"))
_PER = {60: "per minute", 300: "per 5 min", 900: "per 15 min", 3600: "per hour"}

Fetch = Callable[[str, int | None], Awaitable[dict[str, Any]]]


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def outcome_color(outcome: str, palette: QPalette) -> QColor:
    """The colour of an outcome (succeeded, failed, cancelled) on this palette."""
    light, dark = _COLOURS.get(outcome, ("#808080", "#a0a0a0"))
    return QColor(dark if is_dark(palette) else light)


def format_duration(seconds: float | None) -> str:
    """A run time for people: "40 ms", "2.3 s", "4 min 5 s"; "–" for none."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return format_seconds(seconds)


def _local(iso_text: str) -> datetime:
    """An API time ("...Z") as a naive local datetime."""
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).astimezone().replace(
        tzinfo=None)


@dataclass(frozen=True)
class ChartBucket:
    """One bar: tasks finished from `start` (local time) for the bucket's length."""

    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.get(o, 0) for o in OUTCOMES)


def nice_step(top: int, ticks: int = 4) -> int:
    """An integer step of 1, 2 or 5 times a power of ten with about `ticks` steps to `top`."""
    raw = max(1.0, top / ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)  # pragma: no cover (the loop always returns)


class ActivityChart(QWidget):
    """Stacked bars of finished tasks per bucket, by outcome.

    After each paint, `segments` holds what was drawn: (bucket index, outcome, count, rect)
    for every non-empty piece of a bar (what the tests hold against the data).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.buckets: list[ChartBucket] = []
        self.bucket_seconds = 60
        self.window = "hour"
        self.loaded = False
        self.hovered: int | None = None
        self.segments: list[tuple[int, str, int, QRectF]] = []
        self._plot = QRectF()
        self.setMouseTracking(True)
        self.setMinimumSize(360, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Tasks finished over time")

    # ---------------------------------------------------------------- data

    def set_data(self, buckets: list[ChartBucket], bucket_seconds: int, window: str) -> None:
        self.buckets = buckets
        self.bucket_seconds = bucket_seconds
        self.window = window
        self.loaded = True
        if self.hovered is not None and self.hovered >= len(buckets):
            self.hovered = None
        self.setAccessibleDescription(self.summary())
        self.update()

    @property
    def empty(self) -> bool:
        return not any(b.total for b in self.buckets)

    def totals(self) -> dict[str, int]:
        return {o: sum(b.counts.get(o, 0) for b in self.buckets) for o in OUTCOMES}

    def empty_text(self) -> str:
        return f"No tasks finished in the {WINDOWS.get(self.window, 'window').lower()}"

    def summary(self) -> str:
        if not self.loaded:
            return "Loading…"
        if self.empty:
            return self.empty_text()
        totals = self.totals()
        parts = ", ".join(f"{totals[o]} {o}" for o in OUTCOMES)
        return f"{sum(totals.values())} finished in the {WINDOWS[self.window].lower()}: {parts}"

    def bucket_label(self, index: int) -> str:
        """The bucket's time span, e.g. "14:05–14:06" (with the day for a day's buckets)."""
        b = self.buckets[index]
        end = datetime.fromtimestamp(b.start.timestamp() + self.bucket_seconds)
        span = f"{b.start:%H:%M}–{end:%H:%M}"
        return f"{b.start:%a} {span}" if self.window == "day" else span

    def tooltip_text(self, index: int) -> str:
        b = self.buckets[index]
        lines = [self.bucket_label(index)]
        lines += [f"{OUTCOME_LABELS[o]}: {b.counts.get(o, 0)}" for o in OUTCOMES]
        return "\n".join(lines)

    def bucket_at(self, pos: QPointF) -> int | None:
        """The bucket whose column is under `pos` (widget coordinates), if any."""
        plot = self._plot
        if not self.buckets or plot.isEmpty():
            return None
        if not (plot.left() <= pos.x() < plot.right() and plot.top() <= pos.y() <= plot.bottom()):
            return None
        index = int((pos.x() - plot.left()) / (plot.width() / len(self.buckets)))
        return min(index, len(self.buckets) - 1)

    def column_center(self, index: int) -> QPointF:
        """The middle of bucket `index`'s column (for hovering it, in tests too)."""
        plot = self._layout()
        width = plot.width() / max(1, len(self.buckets))
        return QPointF(plot.left() + (index + 0.5) * width, plot.center().y())

    # ------------------------------------------------------------- drawing

    def _layout(self) -> QRectF:
        fm = QFontMetrics(self.font())
        top_value = self._top()
        left = fm.horizontalAdvance(str(top_value)) + 14
        top = fm.height() * 2 + 8  # the title and the legend
        bottom = fm.height() + 10  # the time labels
        self._plot = QRectF(left, top, max(10, self.width() - left - 14),
                            max(10, self.height() - top - bottom))  # fmt: skip
        return self._plot

    def _top(self) -> int:
        peak = max((b.total for b in self.buckets), default=0)
        step = nice_step(peak)
        return max(step, -(-peak // step) * step)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        muted = QColor(text)
        muted.setAlphaF(0.6)
        grid = QColor(text)
        grid.setAlphaF(0.15)
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        fm = QFontMetrics(self.font())
        plot = self._layout()
        self.segments = []

        # Title (the y axis says what it counts) and legend with the totals.
        p.setPen(text)
        title = f"Tasks finished {_PER.get(self.bucket_seconds, 'per bucket')}"
        p.drawText(QPointF(6, fm.ascent() + 4), title)
        totals = self.totals()
        x = float(self.width() - 8)
        for outcome in reversed(OUTCOMES):
            label = f"{OUTCOME_LABELS[outcome]} {totals[outcome]}" if self.loaded else \
                OUTCOME_LABELS[outcome]
            x -= fm.horizontalAdvance(label)
            p.setPen(text)
            p.drawText(QPointF(x, fm.ascent() + 4), label)
            x -= fm.height() * 0.8 + 6
            swatch = QRectF(x, 4 + (fm.height() - fm.height() * 0.8) / 2,
                            fm.height() * 0.8, fm.height() * 0.8)  # fmt: skip
            p.fillRect(swatch, outcome_color(outcome, pal))
            x -= 16

        # Axes and grid: the y axis in nice integer steps.
        top_value = self._top()
        step = nice_step(top_value)
        for value in range(0, top_value + 1, step):
            y = plot.bottom() - plot.height() * value / top_value
            p.setPen(QPen(grid, 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(muted)
            label = str(value)
            p.drawText(QPointF(plot.left() - 6 - fm.horizontalAdvance(label),
                               y + fm.ascent() / 2 - 1), label)  # fmt: skip
        p.setPen(QPen(muted, 1))
        p.drawLine(QPointF(plot.left(), plot.top()), QPointF(plot.left(), plot.bottom()))
        p.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.bottom()))

        n = len(self.buckets)
        if n:
            width = plot.width() / n
            self._draw_time_labels(p, plot, width, fm, muted)
            if self.hovered is not None:
                shade = QColor(pal.color(QPalette.ColorRole.Highlight))
                shade.setAlphaF(0.18)
                p.fillRect(QRectF(plot.left() + self.hovered * width, plot.top(), width,
                                  plot.height()), shade)  # fmt: skip
            gap = min(width * 0.2, 4.0) if width >= 3 else 0.0
            for i, b in enumerate(self.buckets):
                y = plot.bottom()
                for outcome in OUTCOMES:
                    count = b.counts.get(outcome, 0)
                    if not count:
                        continue
                    h = plot.height() * count / top_value
                    rect = QRectF(plot.left() + i * width + gap / 2, y - h, width - gap, h)
                    p.fillRect(rect, outcome_color(outcome, pal))
                    self.segments.append((i, outcome, count, rect))
                    y -= h

        if not self.loaded or self.empty:
            p.setPen(muted)
            message = "Loading…" if not self.loaded else \
                f"{self.empty_text()}\nTasks you run show up here as they finish."
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, message)
        p.end()

    def _draw_time_labels(self, p: QPainter, plot: QRectF, width: float, fm: QFontMetrics,
                          colour: QColor) -> None:  # fmt: skip
        """Times under the bars at round local times, as many as fit."""
        room = fm.horizontalAdvance("00:00") + 18
        seconds = self.bucket_seconds
        fits = max(1, int(plot.width() // room))
        span = seconds * len(self.buckets)
        step = next((s for s in (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                                 86400) if s >= seconds and s % seconds == 0
                     and span / s <= fits), 86400)  # fmt: skip
        p.setPen(colour)
        for i, b in enumerate(self.buckets):
            of_day = b.start.hour * 3600 + b.start.minute * 60 + b.start.second
            if of_day % step:
                continue
            x = plot.left() + i * width
            p.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 4))
            label = f"{b.start:%H:%M}"
            lx = min(max(0.0, x - fm.horizontalAdvance(label) / 2),
                     self.width() - fm.horizontalAdvance(label) - 2.0)  # fmt: skip
            p.drawText(QPointF(lx, plot.bottom() + 6 + fm.ascent()), label)

    # --------------------------------------------------------------- hover

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ToolTip and isinstance(e, QHelpEvent):
            index = self.bucket_at(QPointF(e.pos()))
            if index is None:
                QToolTip.hideText()
                e.ignore()
            else:
                QToolTip.showText(e.globalPos(), self.tooltip_text(index), self)
            return True
        return super().event(e)

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        index = self.bucket_at(e.position())
        if index != self.hovered:
            self.hovered = index
            self.update()
            if index is not None and QToolTip.isVisible():
                QToolTip.showText(e.globalPosition().toPoint(), self.tooltip_text(index), self)
        super().mouseMoveEvent(e)

    def leaveEvent(self, e: QEvent) -> None:  # noqa: N802 (Qt's name)
        if self.hovered is not None:
            self.hovered = None
            self.update()
        super().leaveEvent(e)


class _DurationBarDelegate(QStyledItemDelegate):
    """A bar from 0 to p95 (light) over one to p50 (solid), on one scale for every row."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:  # fmt: skip
        super().paint(painter, option, index)
        value = index.data(Qt.ItemDataRole.UserRole)
        if not value:
            return
        p50, p95, scale = value
        if not scale:
            return
        rect = QRectF(option.rect).adjusted(4, 5, -4, -5)  # type: ignore[attr-defined]
        accent = QColor(option.palette.color(QPalette.ColorRole.Highlight))  # type: ignore[attr-defined]
        light = QColor(accent)
        light.setAlphaF(0.35)
        painter.save()
        painter.fillRect(QRectF(rect.left(), rect.top(), rect.width() * p95 / scale,
                                rect.height()), light)  # fmt: skip
        painter.fillRect(QRectF(rect.left(), rect.top(), max(1.0, rect.width() * p50 / scale),
                                rect.height()), accent)  # fmt: skip
        painter.restore()


class DurationTable(QTableWidget):
    """Each task type's finished tasks in the window and its p50/p95 run times."""

    MAX_ROWS_SHOWN = 8
    HEADERS = ("Task", "Finished", "Succeeded", "Failed", "Cancelled", "p50", "p95",
               "Run time (p50 / p95)")  # fmt: skip

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().hide()
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setAccessibleName("Run time per task type")
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 170)
        header.setSectionResizeMode(len(self.HEADERS) - 1, QHeaderView.ResizeMode.Stretch)
        self.setItemDelegateForColumn(len(self.HEADERS) - 1, _DurationBarDelegate(self))
        self.header_tips = {
            "p50": "Half of the runs took at most this long (the median)",
            "p95": "95 of 100 runs took at most this long",
        }
        for col, name in enumerate(self.HEADERS):
            item = self.horizontalHeaderItem(col)
            if item is not None and name in self.header_tips:
                item.setToolTip(self.header_tips[name])

    def set_tasks(self, tasks: list[dict[str, Any]], title_of: Callable[[str], str]) -> None:
        self.setRowCount(len(tasks))
        scale = max((t.get("p95") or 0 for t in tasks), default=0)
        pal = self.palette()
        for row, t in enumerate(tasks):
            name = str(t.get("task", ""))
            values: list[Any] = [title_of(name), t.get("n", 0)]
            values += [t.get(o, 0) for o in OUTCOMES]
            values += [format_duration(t.get("p50")), format_duration(t.get("p95")), ""]
            for col, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if col == 0:
                    item.setToolTip(name)
                elif col < 7:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)  # fmt: skip
                if 2 <= col <= 4 and value:
                    item.setForeground(outcome_color(OUTCOMES[col - 2], pal))
                if col == 7:
                    timed = t.get("timed", 0)
                    item.setData(Qt.ItemDataRole.UserRole,
                                 (t.get("p50") or 0, t.get("p95") or 0, scale))  # fmt: skip
                    item.setToolTip(f"p50 {format_duration(t.get('p50'))}, p95 "
                                    f"{format_duration(t.get('p95'))}, longest "
                                    f"{format_duration(t.get('max'))}, over {timed} "
                                    f"run{'s' if timed != 1 else ''}")  # fmt: skip
                self.setItem(row, col, item)
        # As tall as its rows (up to MAX_ROWS_SHOWN, then it scrolls): the chart gets the rest.
        shown = min(len(tasks), self.MAX_ROWS_SHOWN)
        rows = sum(self.rowHeight(r) for r in range(shown)) if shown else 0
        self.setMaximumHeight(self.horizontalHeader().sizeHint().height() + rows
                              + 2 * self.frameWidth() + 2)  # fmt: skip


class ActivityView(QWidget):
    """The chart, the window toggle, the duration table; it loads what it shows through
    `set_source`'s fetch (the bridge's `activity`)."""

    def __init__(self, parent: QWidget | None = None,
                 title_of: Callable[[str], str] | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setObjectName("activity_view")
        self.title_of = title_of or (lambda name: name)
        self._fetch: Fetch | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._again = False  # asked for a refresh while one was in flight
        self._last_refresh = -math.inf
        self.body: dict[str, Any] | None = None
        self.refreshes = 0  # answers shown (for tests and the curious)

        self.window_buttons = QButtonGroup(self)
        controls = QHBoxLayout()
        for i, (key, label) in enumerate(WINDOWS.items()):
            button = QToolButton()
            button.setText(label)
            button.setCheckable(True)
            button.setChecked(i == 0)
            button.setProperty("window", key)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.window_buttons.addButton(button, i)
            controls.addWidget(button)
        self.window_buttons.idClicked.connect(self._on_window_buttons_id_clicked)
        self.bucket_box = QComboBox()
        self.bucket_box.setAccessibleName("Bars of the last day")
        for seconds, label in DAY_BUCKETS:
            self.bucket_box.addItem(label, seconds)
        self.bucket_box.setEnabled(False)
        self.bucket_box.currentIndexChanged.connect(lambda _i: self.refresh())
        controls.addWidget(self.bucket_box)
        controls.addSpacing(12)
        self.summary = QLabel("Loading…")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        controls.addWidget(self.summary, 1)

        self.chart = ActivityChart()
        self.durations = DurationTable()
        self.durations_hint = QLabel()
        self.durations_hint.setEnabled(False)  # drawn muted
        self.durations_hint.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(controls)
        layout.addWidget(self.chart, 3)
        layout.addWidget(QLabel("<b>Run time per task type</b>"))
        layout.addWidget(self.durations, 2)
        layout.addWidget(self.durations_hint)

        self._throttle = QTimer(self, singleShot=True)
        self._throttle.timeout.connect(self.refresh)
        self._slide = QTimer(self, interval=SLIDE_INTERVAL)
        self._slide.timeout.connect(self.refresh)

    # ------------------------------------------------------------ choices

    @property
    def window(self) -> str:
        button = self.window_buttons.checkedButton()
        return str(button.property("window")) if button else "hour"

    @property
    def bucket(self) -> int | None:
        return int(self.bucket_box.currentData()) if self.window == "day" else None

    def set_window(self, window: str, bucket: int | None = None) -> None:
        """Show the last "hour" or "day" (in buckets of `bucket` s: 3600 or 900)."""
        for button in self.window_buttons.buttons():
            if button.property("window") == window:
                button.setChecked(True)
        self.bucket_box.setEnabled(window == "day")
        if bucket is not None:
            index = self.bucket_box.findData(bucket)
            if index >= 0:
                self.bucket_box.blockSignals(True)
                self.bucket_box.setCurrentIndex(index)
                self.bucket_box.blockSignals(False)
        self.refresh()

    def _on_window_buttons_id_clicked(self, _id: int) -> None:
        self.bucket_box.setEnabled(self.window == "day")
        self.refresh()

    # ------------------------------------------------------------ loading

    def set_source(self, fetch: Fetch | None) -> None:
        """Where the data comes from: `fetch(window, bucket)` -> the /api/activity body."""
        self._fetch = fetch
        if self.isVisible():
            self.refresh()

    def note_task_finished(self, *_: object) -> None:
        """A task finished: refresh, at most once per REFRESH_INTERVAL (and only while
        shown: a hidden view refreshes when it is shown again)."""
        if not self.isVisible() or self._throttle.isActive():
            return
        wait = self._last_refresh + REFRESH_INTERVAL - time.monotonic()
        self._throttle.start(max(0, int(wait * 1000)))

    def refresh(self) -> None:
        """Load the chosen window now (a refresh already under way is followed by one)."""
        self._throttle.stop()
        if self._fetch is None:
            return
        if self._inflight is not None and not self._inflight.done():
            self._again = True
            return
        self._last_refresh = time.monotonic()
        self._inflight = asyncio.ensure_future(self._load(self._fetch, self.window, self.bucket))

    async def _load(self, fetch: Fetch, window: str, bucket: int | None) -> None:
        try:
            body = await fetch(window, bucket)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the services are down or restarting: say so, keep the rest
            log.info("activity not loaded: %s", exc)
            self.summary.setText(f"Could not load the activity: {exc}")
        else:
            if window == self.window and bucket == self.bucket:  # else a newer choice follows
                self.set_activity(body)
        finally:
            self._inflight = None
        if self._again or window != self.window or bucket != self.bucket:
            self._again = False
            self.note_task_finished()

    def set_activity(self, body: dict[str, Any]) -> None:
        """Show a GET /api/activity answer."""
        self.body = body
        buckets = [ChartBucket(_local(b["start"]), {o: int(b.get(o, 0)) for o in OUTCOMES})
                   for b in body.get("buckets", [])]  # fmt: skip
        self.chart.set_data(buckets, int(body.get("bucket", 60)), str(body.get("window", "hour")))
        self.summary.setText(self.chart.summary())
        tasks = list(body.get("tasks", []))
        self.durations.set_tasks(tasks, self.title_of)
        self.durations.setVisible(bool(tasks))
        self.durations_hint.setText("" if tasks else
                                    "Run times show here once tasks have finished.")
        self.durations_hint.setVisible(not tasks)
        self.refreshes += 1

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._slide.start()
        self.refresh()

    def hideEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().hideEvent(event)
        self._slide.stop()
        self._throttle.stop()

    def stop(self) -> None:
        """Stop loading (the app is closing)."""
        self._fetch = None
        self._slide.stop()
        self._throttle.stop()
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
