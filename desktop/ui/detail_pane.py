"""The detail pane: everything about the selected task.

A header (title, state, id, attempts, time limit; "attempt 2 of 3, next try in 8 s" with a
countdown while a retry waits); for a failed or cancelled task the error view (why, in
words; its code and collapsible traceback; Run again, Edit and run again, Run again with
Overwrite); then tabs: the result as its task declares it reads (`desktop.ui.result_view`:
links that open a file or its folder, digests, tables; other JSON as a tree) or the error's
message; the streamed output lines; the event timeline (runs of progress merged, a filter by
type); the arguments. Output and timeline are appended to as events arrive rather than
redrawn, so a chatty task does not make the pane expensive.

The Output tab follows the newest line unless the user scrolled up. The model keeps only
the latest lines of a task: then the tab says "Showing the last N of M lines" and "Save
output…" asks (`save_output_requested`) for all of them to be written from the event log.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.ui.error_view import ErrorView
from desktop.ui.result_view import ResultView
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
        link_opened(str): a result's path was opened.
        open_failed(str): a result's path could not be opened (the sentence to show).
        save_output_requested(str, str): the user chose a file (task id, path) to write all
            of the task's output to.
        rerun_requested(id), edit_requested(id), overwrite_requested(id): the error
            section's "Run again", "Edit and run again" and "Run again with Overwrite".
    """

    link_opened = Signal(str)
    open_failed = Signal(str)
    save_output_requested = Signal(str, str)
    rerun_requested = Signal(str)
    edit_requested = Signal(str)
    overwrite_requested = Signal(str)

    COUNTDOWN_MS = 1000
    MAX_OUTPUT_BLOCKS = 10_000  # lines the Output tab holds; the model may keep fewer

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
        self._shown_lines = 0  # output lines shown so far, counted from the task's first
        self._total_lines = 0  # output lines the task has printed, as far as the model knows
        self._follow = True  # the Output tab sticks to its last line (until scrolled up)
        self._appending = False
        self._last_line: str | None = None
        self.save_dialog: QFileDialog | None = None
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
        self.result_view = ResultView()
        self.result_view.opened.connect(self.link_opened)
        self.result_view.open_failed.connect(self.open_failed)
        self.result_view.output_requested.connect(lambda: self.tabs.setCurrentIndex(1))
        self.result_stack = QStackedWidget()
        self.result_stack.addWidget(self.result)
        self.result_stack.addWidget(self.result_view)
        self.output = QPlainTextEdit(readOnly=True)
        self.output.setFont(mono)
        self.output.setMaximumBlockCount(self.MAX_OUTPUT_BLOCKS)
        self.output.setAccessibleName("Output lines")
        self.timeline_view = Timeline(event_summary)
        self.timeline = self.timeline_view.tree
        self.error_view = ErrorView()
        self.error_view.rerun_clicked.connect(lambda: self._emit_for_task(self.rerun_requested))
        self.error_view.edit_clicked.connect(lambda: self._emit_for_task(self.edit_requested))
        self.error_view.overwrite_clicked.connect(
            lambda: self._emit_for_task(self.overwrite_requested))
        self.output.verticalScrollBar().valueChanged.connect(self._on_output_scrolled)
        self.output_notice = QLabel()
        self.output_notice.setAccessibleName("Output kept")
        self.save_output_button = QPushButton("Save output…")
        self.save_output_button.setToolTip("Write all of the task's output to a file")
        self.save_output_button.clicked.connect(self._on_save_output_clicked)
        self.save_output_button.setEnabled(False)
        output_tab = QWidget()
        output_bar = QHBoxLayout()
        output_bar.addWidget(self.output_notice, 1)
        output_bar.addWidget(self.save_output_button)
        output_layout = QVBoxLayout(output_tab)
        output_layout.setContentsMargins(0, 0, 0, 0)
        output_layout.addLayout(output_bar)
        output_layout.addWidget(self.output, 1)
        self.args = QPlainTextEdit(readOnly=True)
        self.args.setFont(mono)
        self.args.setAccessibleName("Arguments")

        self.tabs = QTabWidget()
        self.tabs.addTab(self.result_stack, "Result")
        self.tabs.addTab(output_tab, "Output")
        self.tabs.addTab(self.timeline_view, "Timeline")
        self.tabs.addTab(self.args, "Arguments")
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)

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
        self.result_view.clear()
        self.result_stack.setCurrentWidget(self.result)
        self._shown_events = self._shown_lines = self._total_lines = 0
        self._follow = True
        self._last_line = None
        self.output_notice.clear()
        self.save_output_button.setEnabled(False)

    def show_task(self, task: dict[str, Any], title: str, events: list[Event],
                  output: list[str], output_dropped: int = 0,
                  display: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Render `task`; called again with the same task, it only adds what is new.

        Args:
            output: the latest output lines the model keeps; `output_dropped` older ones
                it let go (so line `output_dropped` is `output[0]`).
            display: how the task's result reads (its catalog entry's), or None.
        """
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
        self._show_result(task, events, display, output)
        self.error_view.show_task(task, _cancel_reason(events))
        self.timeline_view.show_events(events)
        self._shown_events = len(events)
        self._show_output(output, output_dropped)

    def _show_output(self, output: list[str], dropped: int) -> None:
        """Add the lines not shown yet. Counted from the task's first line (the model's
        list stops growing once capped: its length says nothing about what is new)."""
        total = dropped + len(output)
        if total < self._shown_lines:  # the task's output started again: redraw
            self.output.clear()
            self._shown_lines = 0
        new_count = total - self._shown_lines
        if 0 < new_count < len(output) and output[-new_count - 1] != self._last_line:
            # Older lines came in late (a history fetched after live ones): redraw.
            new_count = len(output) + 1
        if new_count > 0:
            new = output[-new_count:] if new_count <= len(output) else output
            if new_count > len(output):  # more arrived than the model kept: start anew
                self.output.clear()
            bar = self.output.verticalScrollBar()
            follow = self._follow
            self._appending = True
            try:
                self.output.appendPlainText("\n".join(new[-self.MAX_OUTPUT_BLOCKS:]))
                if follow:
                    bar.setValue(bar.maximum())
            finally:
                self._appending = False
        self._shown_lines = total
        self._total_lines = total
        self._last_line = output[-1] if output else None
        shown = min(self.output.blockCount(), total) if total else 0
        if total > shown:
            self.output_notice.setText(f"Showing the last {shown:,} of {total:,} lines")
        elif total:
            self.output_notice.setText(f"{total:,} line{'s' if total != 1 else ''}")
        else:
            self.output_notice.clear()
        self.save_output_button.setEnabled(total > 0)

    def _on_tabs_current_changed(self, index: int) -> None:
        if index == 1 and self._follow:  # drawn while hidden: show its end now
            bar = self.output.verticalScrollBar()
            self._appending = True
            try:
                bar.setValue(bar.maximum())
            finally:
                self._appending = False

    def output_following(self) -> bool:
        """Whether the Output tab sticks to its newest line."""
        return self._follow

    def _on_output_scrolled(self, value: int) -> None:
        if self._appending:
            return
        bar = self.output.verticalScrollBar()
        self._follow = value >= bar.maximum() - 1  # scrolled up: stay; back down: follow

    def _on_save_output_clicked(self) -> None:
        if self.task_id is None:
            return
        task_id = self.task_id
        name = (self._task or {}).get("task") or "output"
        dialog = QFileDialog(self, "Save output", os.path.join(
            os.path.expanduser("~"), f"{name}-{task_id[:8]}.txt"))  # fmt: skip
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setFileMode(QFileDialog.FileMode.AnyFile)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
        dialog.setNameFilter("Text files (*.txt *.log);;All files (*)")
        dialog.fileSelected.connect(lambda path: self.save_output_requested.emit(task_id, path))
        dialog.finished.connect(dialog.deleteLater)
        self.save_dialog = dialog
        dialog.open()  # never exec(): the app's coroutines keep running meanwhile

    def show_output_saved(self, text: str) -> None:
        """Say how saving the output went (in the Output tab)."""
        self.output_notice.setText(text)

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

    def _show_result(self, task: dict[str, Any], events: list[Event],
                     display: dict[str, Any] | None = None,
                     output: list[str] | None = None) -> None:  # fmt: skip
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
        if state == "succeeded":
            self.result_view.show_result(task.get("result"), display, output)
            self.result_stack.setCurrentWidget(self.result_view)
        else:
            self.result_stack.setCurrentWidget(self.result)
        if self.result.toPlainText() != text:
            self.result.setPlainText(text)
        # A declared display has its own links and buttons; other results get these.
        paths = (result_paths(task.get("result"))
                 if state == "succeeded" and not display else [])  # fmt: skip
        links = []
        for path in paths:
            links.append(f'<a href="open:{_esc(path)}">Open {_esc(os.path.basename(path))}</a>')
            folder = os.path.dirname(path) if os.path.isfile(path) else path
            links.append(f'<a href="open:{_esc(folder)}">Show folder</a>')
        self.links.setText(" · ".join(dict.fromkeys(links)))

    def _on_links_link_activated(self, link: str) -> None:
        self.result_view.open_path(link.removeprefix("open:"))


def _cancel_reason(events: list[Event]) -> str:
    return next((str(e.data["reason"]) for e in reversed(events)
                 if e.type is EventType.CANCELLED and e.data.get("reason")), "")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")  # fmt: skip
