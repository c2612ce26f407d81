"""The detail pane: everything about the selected task.

A header (title, state, id, attempts), then tabs: the result (pretty JSON, with links that
open an output file or its folder) or the error with its traceback; the streamed output
lines; the event timeline; the arguments. Output and timeline are appended to as events
arrive rather than redrawn, so a chatty task does not make the pane expensive.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from services.core.events import Event, EventType


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def event_summary(ev: Event) -> str:
    """One line saying what an event tells."""
    d = ev.data
    if ev.type is EventType.PROGRESS:
        frac = d.get("fraction")
        pct = "" if frac is None else f"{frac * 100:.0f} % "
        return f"{pct}{d.get('message') or ''}".strip()
    if ev.type is EventType.OUTPUT:
        lines = d.get("lines", [])
        return f"{len(lines)} line(s)" + (f": {lines[-1][:80]}" if lines else "")
    if ev.type is EventType.STARTED:
        return f"attempt {d.get('attempt', ev.attempt)}"
    if ev.type is EventType.RETRYING:
        return f"{d.get('reason', '')}; attempt {d.get('next_attempt', '')} next"
    if ev.type is EventType.SUCCEEDED:
        return pretty(d.get("result"))[:120].replace("\n", " ")
    if ev.type is EventType.FAILED:
        return str((d.get("error") or {}).get("message", ""))
    if ev.type is EventType.CANCELLED:
        return str(d.get("reason", ""))
    return ""


def result_paths(result: Any) -> list[str]:
    """Paths of files or folders a result names (its "path" or "destination" keys)."""
    if not isinstance(result, dict):
        return []
    found = []
    for key in ("path", "destination", "output"):
        value = result.get(key)
        if isinstance(value, str) and value.startswith("/") and os.path.exists(value):
            found.append(value)
    return found


class DetailPane(QWidget):
    """Renders one task. Signals: link_opened(path) after a result link was followed."""

    link_opened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task_id: str | None = None
        self._shown_events = 0
        self._shown_lines = 0
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        self.header = QLabel("Select a task to see its details.")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.links = QLabel()
        self.links.setOpenExternalLinks(False)
        self.links.linkActivated.connect(self._on_links_link_activated)
        self.links.setAccessibleName("Open the task's output")

        self.result = QPlainTextEdit(readOnly=True)
        self.result.setFont(mono)
        self.result.setAccessibleName("Result or error")
        self.output = QPlainTextEdit(readOnly=True)
        self.output.setFont(mono)
        self.output.setMaximumBlockCount(10_000)
        self.output.setAccessibleName("Output lines")
        self.timeline = QTreeWidget()
        self.timeline.setHeaderLabels(["Time", "Event", "Details"])
        self.timeline.setRootIsDecorated(False)
        self.timeline.setUniformRowHeights(True)
        self.timeline.setAccessibleName("Event timeline")
        self.args = QPlainTextEdit(readOnly=True)
        self.args.setFont(mono)
        self.args.setAccessibleName("Arguments")

        self.tabs = QTabWidget()
        self.tabs.addTab(self.result, "Result")
        self.tabs.addTab(self.output, "Output")
        self.tabs.addTab(self.timeline, "Timeline")
        self.tabs.addTab(self.args, "Arguments")

        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.links)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)

    def clear(self) -> None:
        self.task_id = None
        self.header.setText("Select a task to see its details.")
        self.links.clear()
        for w in (self.result, self.output, self.args):
            w.clear()
        self.timeline.clear()
        self._shown_events = self._shown_lines = 0

    def show_task(self, task: dict[str, Any], title: str, events: list[Event],
                  output: list[str]) -> None:  # fmt: skip
        """Render `task`; called again with the same task, it only adds what is new."""
        if task["id"] != self.task_id:
            self.clear()
            self.task_id = task["id"]
            self.args.setPlainText(pretty(task.get("args", {})))
        state = task.get("state", "")
        attempts = f" · attempt {task['attempt']} of {task.get('max_attempts', '?')}" \
            if task.get("attempt", 0) > 1 else ""  # fmt: skip
        cancel = " · cancel requested" if task.get("cancel_requested") and state == "running" \
            else ""  # fmt: skip
        self.header.setText(f"<b>{_esc(title)}</b> — {state}{attempts}{cancel}<br>"
                            f"<small>{task['id']}</small>")  # fmt: skip
        self._show_result(task)
        if len(events) < self._shown_events:  # the timeline was capped: redraw it
            self.timeline.clear()
            self._shown_events = 0
        for ev in events[self._shown_events:]:
            when = datetime.fromtimestamp(ev.ts).strftime("%H:%M:%S.%f")[:-3]
            item = QTreeWidgetItem([when, ev.type.value, event_summary(ev)])
            item.setToolTip(2, pretty(ev.data))
            self.timeline.addTopLevelItem(item)
        self._shown_events = len(events)
        if len(output) < self._shown_lines:
            self.output.clear()
            self._shown_lines = 0
        new = output[self._shown_lines:]
        if new:
            self.output.appendPlainText("\n".join(new))
        self._shown_lines = len(output)

    def _show_result(self, task: dict[str, Any]) -> None:
        state = task.get("state")
        if state == "failed" and task.get("error"):
            err = task["error"]
            text = f"{err.get('code', 'error')}: {err.get('message', '')}"
            if err.get("traceback"):
                text += "\n\n" + err["traceback"]
        elif state == "succeeded":
            text = pretty(task.get("result"))
        elif state == "cancelled":
            text = "Cancelled."
        else:
            text = task.get("message") or ("Waiting to start…" if state == "queued" else "")
        if self.result.toPlainText() != text:
            self.result.setPlainText(text)
        paths = result_paths(task.get("result")) if state == "succeeded" else []
        links = []
        for path in paths:
            links.append(f'<a href="open:{_esc(path)}">Open {_esc(os.path.basename(path))}</a>')
            folder = os.path.dirname(path) if os.path.isfile(path) else path
            links.append(f'<a href="open:{_esc(folder)}">Show folder</a>')
        self.links.setText(" · ".join(dict.fromkeys(links)))

    def _on_links_link_activated(self, link: str) -> None:
        path = link.removeprefix("open:")
        QDesktopServices.openUrl(QUrl.fromLocalFile(path))
        self.link_opened.emit(path)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")  # fmt: skip
