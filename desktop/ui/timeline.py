"""The detail pane's Timeline: a task's events, one row each, except that runs of
consecutive progress events (ten a second from a busy task) and of output events are
merged into one row ("10 % → 80 %, 42 events"); a filter shows one type of event only.

Built for being appended to: `show_events` is called with the whole (capped) list after
every change; when the list only grew, the new events extend the last row or add rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from services.core.events import Event, EventType

ALL = ""  # the filter's "All events"
_MERGED = frozenset({EventType.PROGRESS, EventType.OUTPUT})


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def _percent(event: Event) -> str | None:
    fraction = event.data.get("fraction")
    return f"{fraction * 100:.0f} %" if isinstance(fraction, int | float) else None


def run_summary(run: list[Event], summary: Callable[[Event], str]) -> str:
    """What a row of merged events says: one event as `summary` says it; several progress
    events as "10 % → 80 %, 42 events · 3.1 s left", output events as "3 events, 120
    lines: <the last line>"."""
    if len(run) == 1:
        return summary(run[0])
    first, last = run[0], run[-1]
    if first.type is EventType.PROGRESS:
        span = [p for p in (_percent(first), _percent(last)) if p is not None]
        text = " → ".join(dict.fromkeys(span))
        text = f"{text}, {len(run)} events" if text else f"{len(run)} events"
        message = last.data.get("message")
        return f"{text} · {message}" if message else text
    lines = [str(line) for e in run for line in e.data.get("lines") or ()]
    text = f"{len(run)} events, {len(lines)} line{'s' if len(lines) != 1 else ''}"
    return f"{text}: {lines[-1][:80]}" if lines else text


class Timeline(QWidget):
    """A filter and the tree of rows (`tree`: columns Time, Event, Details)."""

    def __init__(self, summary: Callable[[Event], str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._summary = summary
        self._events: list[Event] = []  # every event given, in seq order
        self._runs: list[list[Event]] = []  # the rows shown: one event, or a merged run
        self.filter = QComboBox(self)
        self.filter.setObjectName("timeline_filter")
        self.filter.setAccessibleName("Show events of type")
        self.filter.addItem("All events", ALL)
        for etype in EventType:
            self.filter.addItem(etype.value.replace("_", " ").capitalize(), etype.value)
        self.filter.currentIndexChanged.connect(self._on_filter_current_index_changed)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["Time", "Event", "Details"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAccessibleName("Event timeline")
        self.tree.setMinimumHeight(40)  # the filter's row must not make a small window taller
        self.counts = QLabel(self)
        self.counts.setEnabled(False)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("Show:", self))
        top.addWidget(self.filter)
        top.addStretch(1)
        top.addWidget(self.counts)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)

    def set_filter(self, etype: str) -> None:
        """Show events of this type only (an EventType value), or all with ALL ("")."""
        index = self.filter.findData(etype)
        self.filter.setCurrentIndex(max(0, index))

    def clear(self) -> None:
        self._events = []
        self._runs = []
        self.tree.clear()
        self.counts.clear()

    def show_events(self, events: list[Event]) -> None:
        """Show `events` (seq order); what was shown already stays, new ones are added."""
        old = self._events
        grew = (len(events) >= len(old) and (not old or (
            events[0].seq == old[0].seq and events[len(old) - 1].seq == old[-1].seq)))
        if not grew:
            self._events = list(events)
            self._redraw()
            return
        new = events[len(old):]
        self._events = list(events)
        for event in new:
            self._add(event)
        self._show_counts()

    def _wanted(self, event: Event) -> bool:
        wanted = self.filter.currentData()
        return not wanted or event.type.value == wanted

    def _add(self, event: Event) -> None:
        if not self._wanted(event):
            return
        last = self._runs[-1] if self._runs else None
        if last is not None and event.type in _MERGED and last[-1].type is event.type:
            last.append(event)
            self._fill(self.tree.topLevelItem(self.tree.topLevelItemCount() - 1), last)
            return
        run = [event]
        self._runs.append(run)
        item = QTreeWidgetItem()
        self._fill(item, run)
        self.tree.addTopLevelItem(item)

    def _fill(self, item: QTreeWidgetItem, run: list[Event]) -> None:
        first, last = run[0], run[-1]
        when = _when(first.ts)
        item.setText(0, when if len(run) == 1 else f"{when} – {_when(last.ts)[:8]}")
        item.setText(1, first.type.value)
        item.setText(2, run_summary(run, self._summary))
        item.setToolTip(2, json.dumps(last.data, indent=2, ensure_ascii=False, default=str)
                        if len(run) == 1 else f"{len(run)} {first.type.value} events from "
                        f"{when} to {_when(last.ts)}; the last one:\n"
                        + json.dumps(last.data, indent=2, ensure_ascii=False, default=str))

    def _redraw(self) -> None:
        # Each row filled once, with its whole run (filling it again for each event of the
        # run, as adding them one by one does, took ~10 ms for a finished task's 50 on a
        # busy machine, in the flush that told of its end).
        self.tree.clear()
        self._runs = []
        for event in self._events:
            if not self._wanted(event):
                continue
            last = self._runs[-1] if self._runs else None
            if last is not None and event.type in _MERGED and last[-1].type is event.type:
                last.append(event)
            else:
                self._runs.append([event])
        items = []
        for run in self._runs:
            item = QTreeWidgetItem()
            self._fill(item, run)
            items.append(item)
        self.tree.setUpdatesEnabled(False)
        self.tree.addTopLevelItems(items)
        self.tree.setUpdatesEnabled(True)
        self._show_counts()

    def _show_counts(self) -> None:
        n = len(self._events)
        self.counts.setText(f"{n} event{'s' if n != 1 else ''} in {len(self._runs)} "
                            f"row{'s' if len(self._runs) != 1 else ''}")  # fmt: skip

    def _on_filter_current_index_changed(self, _index: int) -> None:
        self._redraw()
