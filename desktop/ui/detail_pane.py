"""The detail pane: everything about the selected task.

A header (title, state, id, attempts, time limit; "attempt 2 of 3, next try in 8 s" with a
countdown while a retry waits); for a failed or cancelled task the error view (why, in
words; its code and collapsible traceback; Run again, Edit and run again, Run again with
Overwrite); then tabs: the result (pretty JSON, with links that open an output file or its
folder) or the error's message; the streamed output lines; the event timeline (runs of
progress merged, a filter by type); the arguments. Output and timeline are appended to as
events arrive rather than redrawn, so a chatty task does not make the pane expensive.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.ui.error_view import ErrorView
from desktop.ui.timeline import Timeline
from services.core.events import Event, EventType
from services.core.retry import format_seconds
from services.core.taskview import parse_time
from services.core.wording import (
    attempt_line,
    attempt_text,
    error_text,
    event_text,
    retry_in,
    waiting_attempt,
)


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
    if ev.type is EventType.SUCCEEDED:
        return pretty(d.get("result"))[:120].replace("\n", " ")
    # started, retrying, failed, cancelled, cancel_requested: as the command line says them
    text = event_text(ev)
    return text[:1].upper() + text[1:] if text else ""


def header_facts(task: dict[str, Any], now: float | None = None) -> list[str]:
    """What the header says about a task's attempts and limits, each a short phrase:
    "attempt 2 of 3, next try in 8 s", "time limit 30 s", "1 attempt lost"."""
    facts = []
    attempt = task.get("attempt") or 0
    most = task.get("max_attempts")
    if waiting_attempt(task) is not None:
        line = attempt_line(task, now)
        facts.append("attempt " + line.split(" (at ", 1)[0])  # the clock is in the tooltip
    elif attempt > 1 or (attempt and (most or 0) > 1):
        facts.append("attempt " + attempt_line(task, now))
    limit = task.get("timeout")
    if isinstance(limit, int | float) and limit > 0:
        facts.append(f"time limit {format_seconds(limit)}")
    lost = task.get("lost_attempts") or 0
    if lost:
        facts.append(f"{lost} attempt{'s' if lost != 1 else ''} lost")
    if task.get("cancel_requested") and task.get("state") == "running":
        facts.append("cancel requested")
    return facts


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
    """Renders one task.

    Signals:
        link_opened(path): a result link was followed.
        rerun_requested(id), edit_requested(id), overwrite_requested(id): the error
            section's "Run again", "Edit and run again" and "Run again with Overwrite".
    """

    link_opened = Signal(str)
    rerun_requested = Signal(str)
    edit_requested = Signal(str)
    overwrite_requested = Signal(str)

    COUNTDOWN_MS = 1000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task_id: str | None = None
        self._task: dict[str, Any] | None = None
        self._title = ""
        # Keeps "next try in 8 s" current while the task shown waits for a retry.
        self._countdown = QTimer(self)
        self._countdown.setInterval(self.COUNTDOWN_MS)
        self._countdown.timeout.connect(self._on_countdown_timeout)
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
        self.timeline_view = Timeline(event_summary)
        self.timeline = self.timeline_view.tree
        self.error_view = ErrorView()
        self.error_view.rerun_clicked.connect(lambda: self._emit_for_task(self.rerun_requested))
        self.error_view.edit_clicked.connect(lambda: self._emit_for_task(self.edit_requested))
        self.error_view.overwrite_clicked.connect(
            lambda: self._emit_for_task(self.overwrite_requested))
        self.args = QPlainTextEdit(readOnly=True)
        self.args.setFont(mono)
        self.args.setAccessibleName("Arguments")

        self.tabs = QTabWidget()
        self.tabs.addTab(self.result, "Result")
        self.tabs.addTab(self.output, "Output")
        self.tabs.addTab(self.timeline_view, "Timeline")
        self.tabs.addTab(self.args, "Arguments")

        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.links)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.error_view)
        layout.addWidget(self.tabs, 1)

    def _emit_for_task(self, signal: Any) -> None:
        if self.task_id is not None:
            signal.emit(self.task_id)

    def clear(self) -> None:
        self.task_id = None
        self._task = None
        self._countdown.stop()
        self.header.setText("Select a task to see its details.")
        self.header.setToolTip("")
        self.links.clear()
        for w in (self.result, self.output, self.args):
            w.clear()
        self.timeline_view.clear()
        self.error_view.show_task(None)
        self._shown_events = self._shown_lines = 0

    def show_task(self, task: dict[str, Any], title: str, events: list[Event],
                  output: list[str]) -> None:  # fmt: skip
        """Render `task`; called again with the same task, it only adds what is new."""
        if task["id"] != self.task_id:
            self.clear()
            self.task_id = task["id"]
            self.args.setPlainText(pretty(task.get("args", {})))
        self._task, self._title = task, title
        self._show_header()
        if retry_in(task) is not None:
            if not self._countdown.isActive():
                self._countdown.start()
        else:
            self._countdown.stop()
        self._show_result(task, events)
        self.error_view.show_task(task, _cancel_reason(events))
        self.timeline_view.show_events(events)
        self._shown_events = len(events)
        if len(output) < self._shown_lines:
            self.output.clear()
            self._shown_lines = 0
        new = output[self._shown_lines:]
        if new:
            self.output.appendPlainText("\n".join(new))
        self._shown_lines = len(output)

    def countdown_ticking(self) -> bool:
        """Whether the header's "next try in …" is being refreshed."""
        return self._countdown.isActive()

    def _show_header(self) -> None:
        task = self._task
        if task is None:
            return
        facts = "".join(f" · {_esc(f)}" for f in header_facts(task))
        self.header.setText(f"<b>{_esc(self._title)}</b> — {task.get('state', '')}{facts}<br>"
                            f"<small>{task['id']}</small>")  # fmt: skip
        self.header.setToolTip(f"Attempt {attempt_line(task)}" if waiting_attempt(task) else "")

    def _on_countdown_timeout(self) -> None:
        if self._task is None or retry_in(self._task) is None:
            self._countdown.stop()
        self._show_header()

    def _show_result(self, task: dict[str, Any], events: list[Event]) -> None:
        state = task.get("state")
        err = task.get("error")
        if state == "failed" and err:
            # In words: the code and the traceback are in the error view above the tabs.
            text = str(err.get("message") or error_text(err))
        elif state == "succeeded":
            text = pretty(task.get("result"))
        elif state == "cancelled":
            reason = next((str(e.data["reason"]) for e in reversed(events)
                           if e.type is EventType.CANCELLED and e.data.get("reason")), "")
            text = f"Cancelled: {reason}." if reason else "Cancelled."
        elif waiting_attempt(task) is not None and isinstance(err, dict):
            # The header counts down; this says when, which stays true.
            at = parse_time(task.get("next_attempt_at"))
            when = (f"runs at {datetime.fromtimestamp(at).strftime('%H:%M:%S')}" if at
                    else "runs as soon as a worker is free")  # fmt: skip
            upcoming = attempt_text(waiting_attempt(task) or 0, task.get("max_attempts"))
            text = (f"Attempt {task.get('attempt')} failed: {error_text(err)}\n"
                    f"Attempt {upcoming} {when}.")  # fmt: skip
            if err.get("traceback"):
                text += "\n\n" + err["traceback"]
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


def _cancel_reason(events: list[Event]) -> str:
    return next((str(e.data["reason"]) for e in reversed(events)
                 if e.type is EventType.CANCELLED and e.data.get("reason")), "")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")  # fmt: skip
