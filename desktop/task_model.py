"""The task table: `TaskModel`, the principal's tasks kept current by events, and
`TaskFilterProxy`, the state and text filter in front of it.

The model holds the tasks as the API's task dicts and changes them only through
`services.core.taskview`, the rules every client shares. Events arrive at high rates (200
tasks streaming progress), so `apply_event` changes the data at once but tells the views
later: every change of a burst is merged into one flush on a short timer, which inserts the
new rows in as few `beginInsertRows` as possible and emits one `dataChanged` per run of
neighbouring changed rows and of the cells that changed in them (a progress event changes
the Progress and Message cells only), each range cut to what a view repaints for itself
rather than repainting all it shows, with each row's latest values: intermediate progress
is coalesced, the final state never dropped. Loads, upserts and removals are rare and are
announced at once.

Live events come through `take_events`, which queues them and applies them in bounded
slices, one per turn of the event loop: a burst (a reconnect's replay, a backlog the loop
fell behind on) never holds the loop for longer than a slice, so input, painting and the
flush timer run in between.

Rows are newest first: row 0 is the task submitted last.

Retries and limits read as the command line says them (`services.core.wording`): a task
waiting for a retry shows "Attempt 2 of 3 · next try in 8 s" with a countdown kept current
by a timer that runs only while some task waits, a timed-out one "Timed out after 30 s", a
task killed after its cancel grace "Stopped by force after 5 s".
"""

from __future__ import annotations

import bisect
import heapq
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from enum import IntEnum
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QModelRoleDataSpan,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QGuiApplication

from desktop import state_look
from services.core import resultview, search, taskview
from services.core.events import Event, EventType
from services.core.retry import format_seconds
from services.core.states import TaskState
from services.core.wording import attempt_text, countdown, error_text, retry_in, waiting_attempt

AnyIndex = QModelIndex | QPersistentModelIndex

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
_USER = int(Qt.ItemDataRole.UserRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_DECORATION = int(Qt.ItemDataRole.DecorationRole)

_ROW_FLAGS = (Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
              | Qt.ItemFlag.ItemNeverHasChildren)  # fmt: skip
_ALIGN_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_ALIGN_CENTER = Qt.AlignmentFlag.AlignCenter

_STATE_LABELS = {
    TaskState.QUEUED.value: "Queued",
    TaskState.RUNNING.value: "Running",
    TaskState.SUCCEEDED.value: "Succeeded",
    TaskState.FAILED.value: "Failed",
    TaskState.CANCELLED.value: "Cancelled",
}
# What a running task says often: a timeline keeps the latest of these, and every other
# event (queued, started, retrying, the end) always.
_CHATTER = frozenset({EventType.PROGRESS, EventType.OUTPUT})
_TOOLTIP_CHARS = 2000
# Progress events a finished task keeps in its timeline.
_SETTLED_PROGRESS = 50
# Events for tasks the model does not know yet, kept until the task arrives.
_ORPHAN_TASKS, _ORPHAN_EVENTS = 500, 1000
_MISSING = object()


# A dataChanged over more cells than this makes a QTableView repaint its whole viewport
# (Qt 6.11, measured); up to it, only where the range meets the viewport, nothing for rows
# scrolled out of sight. A flush cuts its ranges to this size.
_VIEW_RANGE_CELLS = 200


def _seq(event: Event) -> int:
    return event.seq


def _spans(columns: int) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of neighbouring columns set in the bit mask `columns`."""
    col = 0
    while columns >> col:
        if columns >> col & 1:
            first = col
            while columns >> (col + 1) & 1:
                col += 1
            yield first, col
        col += 1


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive numbers in a sorted list."""
    start = 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            yield numbers[start], numbers[i - 1]
            start = i


class _Row:
    """One task of the table, with what its cells need parsed once per change."""

    __slots__ = ("id", "task", "created", "started", "finished", "waiting", "cells", "search",
                 "_submitted")  # fmt: skip

    def __init__(self, task: dict[str, Any]) -> None:
        self.id: str = task["id"]
        # The position in the table follows the creation time, which never changes.
        self.created = taskview.parse_time(task.get("created_at")) or 0.0
        self._submitted: tuple[Any, str] | None = None
        self.set(task)

    def submitted(self) -> str:
        """The Submitted cell: the creation time never changes, so it is made once a day
        (it reads as a time of day today, with its date from tomorrow on)."""
        today = time.localtime()[:3]
        if self._submitted is None or self._submitted[0] != today:
            self._submitted = (today, taskview.format_submitted(self.task.get("created_at")))
        return self._submitted[1]

    def set(self, task: dict[str, Any]) -> None:
        self.task = task
        self.started = taskview.parse_time(task.get("started_at"))
        self.finished = taskview.parse_time(task.get("finished_at"))
        # Waiting for a retry's time: its Message counts down, so it is made on every read.
        self.waiting = retry_in(task) is not None
        self.cells: list[str] | None = None  # display texts but Duration, made on demand
        self.search: tuple[str, ...] | None = None  # for SearchRole, made on demand

    @property
    def state(self) -> str:
        return self.task.get("state") or ""

    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished
        if end is None:
            if self.state != TaskState.RUNNING.value:
                return None
            end = time.time()
        return max(0.0, end - self.started)


class _History:
    """One task's events and output lines, capped.

    The lifecycle events (queued, started, retrying, the end...) are few and always kept;
    progress and output events are kept up to a number, oldest dropped first. Events may
    arrive out of order (a history fetched after live events) and twice (a replay).
    """

    __slots__ = ("lifecycle", "chatter", "events_dropped", "floor", "chunks", "lines",
                 "lines_dropped", "last_seq")  # fmt: skip

    def __init__(self) -> None:
        self.lifecycle: list[Event] = []
        self.chatter: list[Event] = []
        self.events_dropped = 0
        self.floor = 0  # the newest progress or output event dropped
        self.chunks: list[tuple[int, list[str]]] = []  # (seq, lines) of output events
        self.lines = 0
        self.lines_dropped = 0
        self.last_seq = 0

    def add(self, event: Event, max_events: int, max_lines: int) -> bool:
        """Keep `event`; False if it was seen before (or is older than what was dropped)."""
        kept = self.chatter if event.type in _CHATTER else self.lifecycle
        if event.seq > self.last_seq:
            kept.append(event)
            self.last_seq = event.seq
        else:
            if self._has(event.seq):
                return False
            if kept is self.chatter and event.seq <= self.floor:
                return False  # dropped before, or older than what was
            bisect.insort(kept, event, key=_seq)
        if len(self.chatter) > max_events:
            extra = len(self.chatter) - max_events
            self.floor = max(self.floor, self.chatter[extra - 1].seq)
            del self.chatter[:extra]
            self.events_dropped += extra
        if event.type is EventType.OUTPUT:
            self._add_output(event, max_lines)
        return True

    def settle(self, keep_progress: int) -> None:
        """Keep only the last progress events of a finished task: its timeline is read
        now, not watched, and a session's finished tasks would hold on to every one."""
        progress = [e.seq for e in self.chatter if e.type is EventType.PROGRESS]
        if len(progress) <= keep_progress:
            return
        cut = progress[-keep_progress - 1] if keep_progress else progress[-1]
        before = len(self.chatter)
        self.chatter = [e for e in self.chatter
                        if e.type is not EventType.PROGRESS or e.seq > cut]  # fmt: skip
        self.events_dropped += before - len(self.chatter)
        self.floor = max(self.floor, cut)

    def _has(self, seq: int) -> bool:
        for kept in (self.lifecycle, self.chatter):
            i = bisect.bisect_left(kept, seq, key=_seq)
            if i < len(kept) and kept[i].seq == seq:
                return True
        return False

    def _add_output(self, event: Event, max_lines: int) -> None:
        lines = [str(line) for line in event.data.get("lines") or ()]
        if not lines:
            return
        if not self.chunks or event.seq > self.chunks[-1][0]:
            self.chunks.append((event.seq, lines))
        else:
            bisect.insort(self.chunks, (event.seq, lines), key=lambda c: c[0])
        self.lines += len(lines)
        while self.lines > max_lines:
            seq, first = self.chunks[0]
            extra = self.lines - max_lines
            if extra >= len(first):
                del self.chunks[0]
                extra = len(first)
            else:
                self.chunks[0] = (seq, first[extra:])
            self.lines -= extra
            self.lines_dropped += extra

    def events(self) -> list[Event]:
        return list(heapq.merge(self.lifecycle, self.chatter, key=_seq))

    def output(self) -> list[str]:
        return [line for _, lines in self.chunks for line in lines]


class TaskModel(QAbstractTableModel):
    """The principal's tasks as a table, newest first, kept current by events.

    Signals:
        task_changed(str): a task's data, timeline or output changed (coalesced: once per
            flush for any number of events of that task).
        tasks_changed(list): the same for every task a flush changed, in one emission
            (200 streaming tasks are 200 task_changed per flush, each a call per slot).
        task_finished(str): a task reached a terminal state through an event, while the app
            watched it (once per task; not for tasks loaded already finished).
        task_missing(str): an event arrived for a task the model does not have (not loaded
            yet, or submitted elsewhere). Fetch it and `upsert` it; its events are kept
            until then. Once per task.
        page_wanted(str, list, object): the next page of the history for a search (its
            text, its states, and the `before` cursor, None for the first page) is wanted:
            fetch it and give it to `add_page` (or `page_failed`).
        search_changed(): the tasks the current search matched changed (filters re-run).

    Paging: the model holds the pages of the history loaded so far (the first at start,
    more as the view scrolls to the end: `canFetchMore`/`fetchMore`), and of each search
    the filter box ran on the server; live events keep every row current and add new
    tasks at the top whatever was loaded.
    """

    class Column(IntEnum):
        TASK = 0
        STATE = 1
        PROGRESS = 2
        MESSAGE = 3
        SUBMITTED = 4
        DURATION = 5
        RESULT = 6

    HEADERS = ("Task", "State", "Progress", "Message", "Submitted", "Duration", "Result")

    # The cells (a bit per column) a change of a task's key shows in. A progress event
    # changes the Progress and Message cells only, and the views repaint just those: most
    # of what a stream repaints. Any other key may show in any cell (a new state changes
    # the row's look) but Submitted, the creation time, which never changes.
    _EVERY_CELL = ((1 << len(HEADERS)) - 1) & ~(1 << Column.SUBMITTED)
    _CELLS_OF_KEY = {"progress": 1 << Column.PROGRESS, "message": 1 << Column.MESSAGE,
                     "seq": 0, "updated_at": 0}  # fmt: skip

    TaskIdRole = _USER + 1  # str
    StateRole = _USER + 2  # str: a TaskState value
    ProgressRole = _USER + 3  # float in 0..1, or None
    SortRole = _USER + 4  # per column: a str or a float that sorts like the column reads
    TaskRole = _USER + 5  # the task dict itself (do not change it)
    SearchRole = _USER + 6  # (id, title, name, message, args, result): what a search reads
    OutcomeRole = _USER + 20  # str: a desktop.state_look outcome ("failed", ...) or None

    _ROLES = frozenset({_DISPLAY, TaskIdRole, StateRole, ProgressRole, SortRole, TaskRole,
                        SearchRole, _TOOLTIP, _FOREGROUND, _DECORATION, OutcomeRole,
                        _ALIGNMENT})  # fmt: skip

    FLUSH_MS = 32  # two frames at 60 Hz: what changed shows within a frame or two
    MAX_FLUSH_MS = 120  # ... stretched up to this while the app (or the machine) is busy
    SLICE_EVENTS = 250  # the most queued events applied in one turn of the event loop
    SLICE_SECONDS = 0.008  # ... and for about this long at most
    TICK_MS = 1000
    RETRY_TICK_MS = 1000

    task_changed = Signal(str)
    tasks_changed = Signal(list)
    task_finished = Signal(str)
    task_missing = Signal(str)
    page_wanted = Signal(str, list, object)
    search_changed = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        flush_ms: int = FLUSH_MS,
        tick_ms: int = TICK_MS,
        retry_tick_ms: int = RETRY_TICK_MS,
        max_events: int = 1000,
        max_output_lines: int = 10_000,
    ) -> None:
        super().__init__(parent)
        self._max_events = max_events
        self._max_lines = max_output_lines
        self._rows: list[_Row] = []  # oldest first: table row = len - 1 - position
        self._pos: dict[str, int] = {}
        self._pending: dict[str, _Row] = {}  # created by events, inserted at the next flush
        self._history: dict[str, _History] = {}
        self._orphans: dict[str, list[Event]] = {}
        self._asked: set[str] = set()  # task_missing emitted
        self._removed: set[str] = set()
        self._titles: dict[str, str] = {}
        self._displays: dict[str, dict[str, Any]] = {}  # how each task's result reads
        self._dirty: dict[str, int] = {}  # rows changed since the last flush: their cells
        self._changed: set[str] = set()  # task_changed to emit
        self._finished: list[str] = []  # task_finished to emit
        self._announced: set[str] = set()  # task_finished emitted
        self._running: set[str] = set()
        self._waiting: set[str] = set()  # tasks counting down to their next attempt
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(flush_ms)
        self._flush_timer.timeout.connect(self._on_flush_timer_timeout)
        self.flushes = 0  # flushes that told the views something (for the bench)
        self._flush_ms = flush_ms  # the shortest flush period; the timer's may be longer
        self._flush_cpu = time.thread_time()  # the GUI thread's CPU time at the last flush
        self._flush_at = time.perf_counter()  # ... and the time of it
        self._flush_due = 0.0  # when the flush timer should fire
        # Live events waiting to be applied (take_events), a slice per loop turn.
        self._intake: deque[Event] = deque()
        self._intake_timer = QTimer(self)
        self._intake_timer.setSingleShot(True)
        self._intake_timer.setInterval(0)
        self._intake_timer.timeout.connect(self._on_intake_timer_timeout)
        self._tick_timer = QTimer(self)
        self._tick_timer.setInterval(tick_ms)
        self._tick_timer.timeout.connect(self._on_tick_timer_timeout)
        self._retry_timer = QTimer(self)
        self._retry_timer.setInterval(retry_tick_ms)
        self._retry_timer.timeout.connect(self._on_retry_timer_timeout)
        # Paging, per search (text, states): the next page's cursor (None: no more), which
        # search is asked for now, and the ids each search matched on the server.
        self._search: tuple[str, tuple[str, ...]] = ("", ())
        self._cursors: dict[tuple[str, tuple[str, ...]], int | None] = {}
        self._fetching: tuple[str, tuple[str, ...]] | None = None
        self._hits: dict[tuple[str, tuple[str, ...]], set[str]] = {}
        self.search_error = ""  # why the current search failed on the server ("" if not)
        # Rows taken out of the table that may come back (removal with undo).
        self._parked: dict[str, tuple[_Row, _History | None]] = {}

    # ------------------------------------------------------------------ Qt model API

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt idiom)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def index(self, row: int, column: int,
              parent: AnyIndex = QModelIndex()) -> QModelIndex:  # noqa: B008  # fmt: skip
        # Made for every index a view or the proxy asks for (several per cell painted):
        # straight, without the base class's hasIndex() and its two calls back into Python.
        if (parent.isValid() or not 0 <= row < len(self._rows)
                or not 0 <= column < len(self.HEADERS)):  # fmt: skip
            return QModelIndex()
        return self.createIndex(row, column)

    def multiData(self, index: AnyIndex, roles: QModelRoleDataSpan) -> None:  # noqa: N802
        # A delegate asks for the seven roles of each cell it paints in one call (font,
        # alignment, colour, check state, icon, text, background): the row is found once
        # and each role answered here, without a trip through Qt for each.
        row = self._row_at(index)
        known, col = self._ROLES, index.column()
        for role_data in roles:
            role = role_data.role()
            if row is None or role not in known:
                role_data.clearData()
            else:
                role_data.setData(self._value(row, col, role))

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return _ROW_FLAGS  # asked for every cell painted: made once

    def canFetchMore(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: N802, B008
        if parent.isValid() or self._fetching is not None:
            return False
        return self._cursors.get(self._search) is not None

    def fetchMore(self, parent: AnyIndex = QModelIndex()) -> None:  # noqa: N802, B008
        if not self.canFetchMore(parent):
            return
        self._fetching = self._search
        text, states = self._search
        self.page_wanted.emit(text, list(states), self._cursors[self._search])

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY
    ) -> Any:
        if (orientation == Qt.Orientation.Horizontal and role == _DISPLAY
                and 0 <= section < len(self.HEADERS)):  # fmt: skip
            return self.HEADERS[section]
        return None

    def data(self, index: AnyIndex, role: int = _DISPLAY) -> Any:
        # Roles it has none of (font, background, check state...) go back at once, before
        # the index is even looked at.
        if role not in self._ROLES:
            return None
        row = self._row_at(index)
        return None if row is None else self._value(row, index.column(), role)

    def _row_at(self, index: AnyIndex) -> _Row | None:
        """The row of a cell of this model, or None if it has no such cell."""
        if not index.isValid():
            return None
        r, col = index.row(), index.column()
        if not (0 <= r < len(self._rows) and 0 <= col < len(self.HEADERS)):
            return None
        return self._rows[len(self._rows) - 1 - r]

    def _value(self, row: _Row, col: int, role: int) -> Any:
        """What a cell of `row` in column `col` gives for `role` (one of `_ROLES`)."""
        if role == _DISPLAY:
            return self._display(row, col)
        if role == self.TaskIdRole:
            return row.id
        if role == self.StateRole:
            return row.state
        if role == self.ProgressRole:
            return row.task.get("progress")
        if role == self.SortRole:
            return self._sort_key(row, col)
        if role == self.TaskRole:
            return row.task
        if role == self.SearchRole:
            if row.search is None:
                row.search = self._search_text(row)
            return row.search
        if role == _TOOLTIP:
            return self._tooltip(row, col)
        if role in (_FOREGROUND, _DECORATION, self.OutcomeRole):
            return self._look(row, col, role)
        if role == _ALIGNMENT:
            if col == self.Column.DURATION:
                return _ALIGN_RIGHT
            if col == self.Column.PROGRESS:
                return _ALIGN_CENTER
        return None

    # ------------------------------------------------------------------ feeding it

    def set_titles(self, titles: Mapping[str, str]) -> None:
        """Show tasks by their catalog titles (task name -> title) instead of their names."""
        self._titles = dict(titles)
        for row in self._rows:
            row.cells = row.search = None
        if self._rows:
            col = self.Column.TASK
            self.dataChanged.emit(self.index(0, col), self.index(len(self._rows) - 1, col))

    def set_displays(self, displays: Mapping[str, dict[str, Any] | None]) -> None:
        """How each task's result reads (its catalog entry's display), for the Result
        column's summary."""
        self._displays = {name: d for name, d in displays.items() if d}
        for row in self._rows:
            row.cells = None
        if self._rows:
            col = self.Column.RESULT
            self.dataChanged.emit(self.index(0, col), self.index(len(self._rows) - 1, col))

    def load(self, tasks: Iterable[dict[str, Any]]) -> None:
        """Merge tasks from the API (a page of GET /api/tasks, in any order).

        Unknown tasks are inserted by submission time, known ones updated when the API's
        copy is newer. Announced at once.
        """
        new: dict[str, _Row] = {}
        for snapshot in tasks:
            tid = snapshot["id"]
            if tid in self._removed:
                continue
            row = self._find(tid)
            if row is not None:
                self._merge(row, snapshot)
            elif tid in new:
                new[tid].set(taskview.merge_snapshot(new[tid].task, snapshot))
            else:
                new[tid] = _Row(taskview.merge_snapshot(None, snapshot))
        self._insert(list(new.values()))
        for row in new.values():
            self._track(row)
            self._history.setdefault(row.id, _History())
            self._adopt_orphans(row.id)
        self.flush()

    def reload(self, tasks: list[dict[str, Any]], as_of: float) -> None:
        """Merge tasks from the API after the notifier said "reset" (events were pruned).

        Args:
            as_of: the wall time at which the list was read: it holds every task created
                before then that the ledger still has (0: it was cut short and says
                nothing of the others). A row created before then that it lacks was
                pruned (it finished meanwhile, whatever the row still says): it goes.
        """
        self.load(tasks)
        if as_of <= 0:
            return
        kept = {t["id"] for t in tasks}
        gone = [row.id for row in self._rows if row.id not in kept and row.created < as_of]
        gone += [tid for tid, row in self._pending.items()
                 if tid not in kept and row.created < as_of]  # fmt: skip
        if gone:
            self.remove_tasks(gone)

    def upsert(self, task: dict[str, Any]) -> None:
        """Add or update one task from the API (a submit's answer, a fetched task)."""
        self.load([task])

    # ------------------------------------------------------------------ paging, search

    def set_cursor(self, before: int | None) -> None:
        """Where the history loaded at start (the plain list, no search) goes on: the
        `before` of its next page, None when it was all of it."""
        self._cursors[("", ())] = before

    def set_search(self, text: str, states: Iterable[str] = ()) -> None:
        """Search the whole history for `text` in these states (server side): its first
        page is asked for at once (`page_wanted`), the next ones as the view scrolls."""
        key = _search_key(text, states)
        self._search = key
        self.search_error = ""
        if key == ("", ()) and key in self._cursors:
            self._fetching = None
            self.search_changed.emit()
            return  # the plain history goes on where it was
        self._cursors.pop(key, None)
        self._hits.pop(key, None)
        self._fetching = key
        self.search_changed.emit()
        self.page_wanted.emit(key[0], list(key[1]), None)

    def search(self) -> tuple[str, tuple[str, ...]]:
        """The current search: its text and states."""
        return self._search

    def add_page(self, text: str, states: Iterable[str], tasks: list[dict[str, Any]],
                 before: int | None) -> None:  # fmt: skip
        """A page of the history the model asked for (`page_wanted`): its tasks, and the
        cursor of the next page (None: it was the last). A page of a search that is no
        longer current is merged, but moves nothing."""
        key = _search_key(text, states)
        self.load(tasks)
        if key != self._search:
            return
        self._fetching = None
        self._cursors[key] = before
        if key[0]:
            self._hits.setdefault(key, set()).update(t["id"] for t in tasks)
            self.search_changed.emit()

    def page_failed(self, text: str, states: Iterable[str], message: str) -> None:
        """Fetching a page failed (a search the server refused, the service down)."""
        key = _search_key(text, states)
        if key != self._search:
            return
        self._fetching = None
        self._cursors[key] = None
        self.search_error = message
        self.search_changed.emit()

    def search_hit(self, task_id: str) -> bool:
        """Whether the server's search for the current text returned this task."""
        return task_id in self._hits.get(self._search, ())

    def fetching(self) -> bool:
        """Whether a page is being fetched."""
        return self._fetching is not None

    # ------------------------------------------------------------------ removal, undo

    def park(self, ids: Iterable[str]) -> list[str]:
        """Take tasks out of the table for now (a removal the user may undo): later
        events of theirs are ignored until `restore`. Returns the ids it took."""
        taken = [t for t in ids if self._find(t) is not None and t not in self._parked]
        for tid in taken:
            row = self._find(tid)
            assert row is not None
            self._parked[tid] = (row, self._history.get(tid))
        self.remove_tasks(taken)
        return taken

    def restore(self, ids: Iterable[str]) -> None:
        """Put parked tasks back where they were (undo)."""
        rows = []
        for tid in ids:
            parked = self._parked.pop(tid, None)
            if parked is None:
                continue
            row, history = parked
            self._removed.discard(tid)
            if history is not None:
                self._history[tid] = history
            rows.append(row)
        self._insert(rows)
        for row in rows:
            self._track(row)

    def forget_parked(self, ids: Iterable[str]) -> None:
        """Parked tasks that are gone for good (deleted on the server)."""
        for tid in ids:
            self._parked.pop(tid, None)

    def apply_event(self, event: Event) -> None:
        """Apply one event from the notifier; the views hear of it at the next flush.

        Duplicates (by seq) and events older than what a task shows are ignored.
        """
        tid = event.task_id
        if tid in self._removed:
            return
        row = self._find(tid)
        if row is None:
            if event.type is not EventType.QUEUED:
                self._keep_orphan(event)
                return
            task = taskview.apply_event(None, event)
            assert task is not None
            row = self._pending[tid] = _Row(task)
            self._history[tid] = history = _History()
            history.add(event, self._max_events, self._max_lines)
            self._changed.add(tid)
            self._track(row)
            self._adopt_orphans(tid)
            self._schedule()
            return
        if not self._history.setdefault(tid, _History()).add(
            event, self._max_events, self._max_lines
        ):
            return
        self._changed.add(tid)
        self._update(row, taskview.apply_event(row.task, event), by_event=True)
        self._schedule()

    def apply_events(self, events: Iterable[Event]) -> None:
        """Apply events in order, now (a replay after a reconnect)."""
        for event in events:
            self.apply_event(event)

    def take_events(self, events: Iterable[Event]) -> None:
        """Queue live events (in seq order) to be applied in slices, one slice per turn of
        the event loop (`SLICE_EVENTS` events or `SLICE_SECONDS` at most), so that a burst
        of any size leaves the loop free in between; each one is applied, in order."""
        self._intake.extend(events)
        if self._intake and not self._intake_timer.isActive():
            self._intake_timer.start()

    def queued_events(self) -> int:
        """How many events `take_events` queued are still to be applied."""
        return len(self._intake)

    def apply_queued(self) -> None:
        """Apply every queued event now (a reader that needs the latest state at once)."""
        while self._intake:
            self.apply_event(self._intake.popleft())
        self._intake_timer.stop()

    @Slot()
    def _on_intake_timer_timeout(self) -> None:
        intake = self._intake
        started = time.perf_counter()
        for n in range(1, self.SLICE_EVENTS + 1):
            if not intake:
                return
            self.apply_event(intake.popleft())
            if n % 16 == 0 and time.perf_counter() - started > self.SLICE_SECONDS:
                break
        if intake:
            self._intake_timer.start()  # the rest at the next turn, after what waits

    @Slot()
    def flush(self) -> None:
        """Tell the views about everything changed since the last flush (the timer does
        this by itself; call it to see the changes at once)."""
        self._flush_timer.stop()
        if self._pending:
            pending, self._pending = list(self._pending.values()), {}
            self._insert(pending)
        dirty, self._dirty = self._dirty, {}
        # The rows by the cells that changed in them: one range per run of neighbouring
        # rows and of neighbouring columns. Never Submitted, the one cell an event never
        # changes: a view sorted by it (the default) then has nothing to sort again.
        by_cells: dict[int, list[int]] = {}
        for tid, cells in dirty.items():
            row = self._row_number(tid)
            if row is not None:
                by_cells.setdefault(cells, []).append(row)
        for cells, rows in by_cells.items():
            rows.sort()
            for first_col, last_col in _spans(cells):
                self._announce(rows, first_col, last_col)
        changed, self._changed = self._changed, set()
        finished, self._finished = self._finished, []
        if by_cells or changed or finished:
            self.flushes += 1
        for tid in changed:
            self.task_changed.emit(tid)
        if changed:
            self.tasks_changed.emit(list(changed))
        for tid in finished:
            self.task_finished.emit(tid)

    def forget_all(self) -> None:
        """Empty the table and the history's paging and search state (the app switched to
        another server: none of these tasks is its). Events still on their way for them
        are ignored."""
        self.remove_tasks([*self._ids(), *self._pending, *self._parked, *self._orphans])
        self._removed.clear()  # (ids are the other server's; coming back loads them again)
        self._parked.clear()
        self._intake.clear()
        self._cursors.clear()
        self._hits.clear()
        self._fetching = None
        self._search = ("", ())
        self.search_error = ""
        self.search_changed.emit()

    def remove_tasks(self, ids: Iterable[str]) -> None:
        """Remove tasks from the table (not from the server); later events of theirs are
        ignored."""
        doomed = set(ids)
        for tid in doomed:
            self._pending.pop(tid, None)
            self._history.pop(tid, None)
            self._orphans.pop(tid, None)
            self._running.discard(tid)
            self._waiting.discard(tid)
            self._dirty.pop(tid, None)
            self._changed.discard(tid)
            self._asked.discard(tid)
        if not self._running:
            self._tick_timer.stop()
        if not self._waiting:
            self._retry_timer.stop()
        self._finished = [t for t in self._finished if t not in doomed]
        self._removed |= doomed
        positions = sorted(self._pos[t] for t in doomed if t in self._pos)
        # Runs of neighbouring rows from the bottom (the oldest) up: removing rows below
        # leaves the row numbers of those above unchanged.
        removed = 0
        for first, last in _runs(positions):
            lo, hi = first - removed, last - removed
            n = len(self._rows)
            self.beginRemoveRows(QModelIndex(), n - 1 - hi, n - 1 - lo)
            for row in self._rows[lo : hi + 1]:
                del self._pos[row.id]
            del self._rows[lo : hi + 1]
            self._reindex(lo)
            self.endRemoveRows()
            removed += hi - lo + 1

    # ------------------------------------------------------------------ reading it

    def task(self, row: int) -> dict[str, Any]:
        """The task dict shown in `row` (do not change it).

        Raises:
            IndexError: no such row.
        """
        if not 0 <= row < len(self._rows):
            raise IndexError(row)
        return self._rows[len(self._rows) - 1 - row].task

    def row_of(self, task_id: str) -> int | None:
        """The row showing the task, or None. A task created by an event that is not
        shown yet is inserted now."""
        if task_id in self._pending:
            self.flush()
        return self._row_number(task_id)

    def task_by_id(self, task_id: str) -> dict[str, Any] | None:
        """The task dict (do not change it), or None if the model does not know it."""
        row = self._find(task_id)
        return row.task if row is not None else None

    def events(self, task_id: str) -> list[Event]:
        """The task's timeline in seq order: every lifecycle event and the latest progress
        and output events (up to `max_events` of those)."""
        history = self._history.get(task_id)
        return history.events() if history else []

    def events_dropped(self, task_id: str) -> int:
        """How many progress and output events of the task were dropped from its timeline."""
        history = self._history.get(task_id)
        return history.events_dropped if history else 0

    def output(self, task_id: str) -> list[str]:
        """The task's latest output lines (up to `max_output_lines`), oldest first."""
        history = self._history.get(task_id)
        return history.output() if history else []

    def output_dropped(self, task_id: str) -> int:
        """How many of the task's output lines were dropped (the oldest ones)."""
        history = self._history.get(task_id)
        return history.lines_dropped if history else 0

    def all_tasks(self) -> list[dict[str, Any]]:
        """Every task dict (do not change them), newest first."""
        return [row.task for row in (*reversed(self._pending.values()), *reversed(self._rows))]

    def finished_ids(self) -> list[str]:
        """Ids of the tasks in a terminal state, newest first."""
        return [t for t in self._ids() if taskview.is_terminal(self._find_state(t))]

    def duration_ticking(self) -> bool:
        """Whether the Duration of running rows is being refreshed (some task runs)."""
        return self._tick_timer.isActive()

    def retry_ticking(self) -> bool:
        """Whether the countdown of tasks waiting for a retry is being refreshed."""
        return self._retry_timer.isActive()

    def waiting_ids(self) -> list[str]:
        """Ids of the tasks waiting for the time of their next attempt, newest first."""
        return [t for t in self._ids() if t in self._waiting]

    def active_ids(self) -> list[str]:
        """Ids of the queued and running tasks, newest first."""
        return [t for t in self._ids() if not taskview.is_terminal(self._find_state(t))]

    # ------------------------------------------------------------------ internals

    def _ids(self) -> list[str]:
        return [*reversed(self._pending), *(row.id for row in reversed(self._rows))]

    def _find_state(self, task_id: str) -> str:
        row = self._find(task_id)
        return row.state if row is not None else ""

    def _find(self, task_id: str) -> _Row | None:
        pos = self._pos.get(task_id)
        if pos is not None:
            return self._rows[pos]
        return self._pending.get(task_id)

    def _row_number(self, task_id: str) -> int | None:
        pos = self._pos.get(task_id)
        return None if pos is None else len(self._rows) - 1 - pos

    def _reindex(self, start: int) -> None:
        for i in range(start, len(self._rows)):
            self._pos[self._rows[i].id] = i

    def _insert(self, rows: list[_Row]) -> None:
        """Insert new rows where their submission times put them, one beginInsertRows per
        run of rows that land together (all of them, for a burst of new tasks)."""
        if not rows:
            return
        rows.sort(key=lambda r: r.created)
        groups: dict[int, list[_Row]] = {}
        for row in rows:
            pos = bisect.bisect_right(self._rows, row.created, key=lambda r: r.created)
            groups.setdefault(pos, []).append(row)
        # From the newest position down, so the positions still to do stay valid.
        for pos in sorted(groups, reverse=True):
            group = groups[pos]
            n = len(self._rows)
            self.beginInsertRows(QModelIndex(), n - pos, n - pos + len(group) - 1)
            self._rows[pos:pos] = group
            self._reindex(pos)
            self.endInsertRows()

    def _merge(self, row: _Row, snapshot: dict[str, Any]) -> None:
        merged = taskview.merge_snapshot(row.task, snapshot)
        if merged != row.task:
            self._changed.add(row.id)
        self._update(row, merged, by_event=False)

    def _update(self, row: _Row, new: dict[str, Any] | None, *, by_event: bool) -> None:
        old = row.task
        if new is None or new is old:
            return
        cells = self._changed_cells(old, new)
        row.set(new)
        if cells and row.id in self._pos:
            self._dirty[row.id] = self._dirty.get(row.id, 0) | cells
        if (by_event and taskview.is_terminal(row.state) and not taskview.is_terminal(
                old.get("state")) and row.id not in self._announced):  # fmt: skip
            self._announced.add(row.id)
            self._finished.append(row.id)
            history = self._history.get(row.id)
            if history is not None:
                history.settle(_SETTLED_PROGRESS)
        self._track(row)

    def _changed_cells(self, old: dict[str, Any], new: dict[str, Any]) -> int:
        """The cells (a bit per column) that may read differently from `old` to `new`."""
        every, of_key = self._EVERY_CELL, self._CELLS_OF_KEY
        cells = 0
        for key, value in new.items():
            if old.get(key, _MISSING) != value:
                cells |= of_key.get(key, every)
                if cells == every:
                    return cells
        if any(key not in new for key in old):
            cells = every
        return cells

    def _announce(self, rows: list[int], first_col: int, last_col: int, *,
                  roles: list[int] | None = None) -> None:  # fmt: skip
        """dataChanged for the columns first_col..last_col of `rows` (sorted): one per run of
        neighbouring rows, cut to `_VIEW_RANGE_CELLS` cells so that a view repaints only
        the changed cells it shows, not its whole viewport."""
        step = max(1, _VIEW_RANGE_CELLS // (last_col - first_col + 1))
        for first, last in _runs(rows):
            for top in range(first, last + 1, step):
                bottom = min(last, top + step - 1)
                self.dataChanged.emit(self.index(top, first_col), self.index(bottom, last_col),
                                      roles or [])  # fmt: skip

    def _track(self, row: _Row) -> None:
        """Keep the sets of running rows whose Duration ticks and of waiting rows whose
        countdown does, each timer running only while its set is not empty."""
        if row.state == TaskState.RUNNING.value:
            self._running.add(row.id)
            if not self._tick_timer.isActive():
                self._tick_timer.start()
        elif row.id in self._running:
            self._running.discard(row.id)
            if not self._running:
                self._tick_timer.stop()
        if row.waiting:
            self._waiting.add(row.id)
            if not self._retry_timer.isActive():
                self._retry_timer.start()
        elif row.id in self._waiting:
            self._waiting.discard(row.id)
            if not self._waiting:
                self._retry_timer.stop()

    def _keep_orphan(self, event: Event) -> None:
        tid = event.task_id
        kept = self._orphans.pop(tid, None) or []  # re-added last: the most recent stay
        if len(kept) < _ORPHAN_EVENTS:
            kept.append(event)
        self._orphans[tid] = kept
        while len(self._orphans) > _ORPHAN_TASKS:
            del self._orphans[next(iter(self._orphans))]
        if tid not in self._asked:
            self._asked.add(tid)
            self.task_missing.emit(tid)

    def _adopt_orphans(self, task_id: str) -> None:
        self._asked.discard(task_id)
        for event in self._orphans.pop(task_id, ()):
            self.apply_event(event)

    def _schedule(self) -> None:
        if not self._flush_timer.isActive():
            self._flush_due = time.perf_counter() + self._flush_timer.interval() / 1000
            self._flush_timer.start()

    def _adapt_flush_period(self) -> None:
        """Flush less often while the GUI thread is busy (over half of the time since the
        last flush, the views' painting included) or the loop runs late (a loaded
        machine): each flush repaints every changed row, so under load fewer flushes that
        each carry more changes keep the loop free; back to `flush_ms` once it is quiet."""
        now, cpu = time.perf_counter(), time.thread_time()
        wall = max(now - self._flush_at, 1e-6)
        busy = (cpu - self._flush_cpu) / wall
        late = now - self._flush_due
        period = self._flush_timer.interval()
        if busy > 0.5 or late * 1000 > period / 2:
            period = min(self.MAX_FLUSH_MS, max(period + 1, round(period * 1.5)))
        elif busy < 0.25 and late * 1000 < period / 8:
            period = max(self._flush_ms, round(period / 1.25))
        self._flush_timer.setInterval(period)
        self._flush_at, self._flush_cpu = now, cpu

    @Slot()
    def _on_flush_timer_timeout(self) -> None:
        self._adapt_flush_period()
        self.flush()

    @Slot()
    def _on_tick_timer_timeout(self) -> None:
        """Refresh the Duration of running rows."""
        self._refresh(self._running, self.Column.DURATION, self._tick_timer)

    @Slot()
    def _on_retry_timer_timeout(self) -> None:
        """Refresh the countdown of waiting rows (their Message)."""
        self._refresh(self._waiting, self.Column.MESSAGE, self._retry_timer)

    def _refresh(self, ids: set[str], col: int, timer: QTimer) -> None:
        """One dataChanged per run of neighbouring rows of `ids` in column `col`, nothing for
        the other rows; `timer` stops once there are none."""
        if not ids:
            timer.stop()
            return
        rows = sorted(r for r in map(self._row_number, ids) if r is not None)
        self._announce(rows, col, col, roles=[_DISPLAY, self.SortRole])

    # ------------------------------------------------------------------ cells

    def _display(self, row: _Row, col: int) -> str:
        if col == self.Column.DURATION:
            return taskview.format_duration(row.duration())
        if col == self.Column.MESSAGE and row.waiting:
            return self._message(row)  # a countdown: made on every read
        if row.cells is None:
            row.cells = self._cells(row)
        return row.cells[col]

    def _cells(self, row: _Row) -> list[str]:
        task = row.task
        state = row.state
        return [
            self._titles.get(task.get("task") or "") or task.get("task") or "",
            self._state_label(task),
            self._progress_text(task),
            self._message(row),
            row.submitted(),
            "",  # Duration: computed on every read, it ticks
            resultview.summary(task.get("result"), self._displays.get(task.get("task") or ""))
            if state == TaskState.SUCCEEDED.value else "",
        ]  # fmt: skip

    def _message(self, row: _Row) -> str:
        """The Message cell: the task's message, or what its retries and limits say."""
        task = row.task
        state = row.state
        error = task.get("error")
        upcoming = waiting_attempt(task)
        if upcoming is not None:  # queued again after an attempt
            text = f"Attempt {attempt_text(upcoming, task.get('max_attempts'))}"
            wait = retry_in(task)
            if wait is not None:
                text += f" · next try {countdown(wait)}"
            detail = error_text(error) if isinstance(error, dict) else task.get("message")
            return f"{text} · {_first_line(detail)}" if detail else text
        if state == TaskState.FAILED.value and isinstance(error, dict) and (
                error.get("code") == "timeout"):  # fmt: skip
            return _capitalized(error_text(error))  # "Timed out after 30 s"
        message = task.get("message") or ""
        if not message and isinstance(error, dict):
            message = str(error.get("message") or "")
        return _first_line(message)

    def _look(self, row: _Row, col: int, role: int) -> Any:
        """How a finished row stands out: its State cell gets the outcome's icon and colour;
        a failure colours its Progress and Message cells too. Chosen for the application's
        palette when asked, so a switch between light and dark follows at the next paint."""
        kind = state_look.outcome(row.task)
        if role == self.OutcomeRole:
            return kind
        if kind is None:
            return None
        palette = QGuiApplication.palette()
        if role == _DECORATION:
            return state_look.outcome_icon(kind, palette) if col == self.Column.STATE else None
        if col == self.Column.STATE or (kind in state_look.FAILURES and col in (
                self.Column.PROGRESS, self.Column.MESSAGE)):  # fmt: skip
            return state_look.outcome_color(kind, palette)
        return None

    def _forced_cancel(self, task_id: str) -> Event | None:
        """The "cancelled" event of a task killed after its cancel grace, if the model saw
        it (its reason, for the tooltip, says more than the task's message)."""
        history = self._history.get(task_id)
        if history is None:
            return None
        for event in reversed(history.lifecycle):
            if event.type is EventType.CANCELLED:
                return event if event.data.get("forced") else None
        return None

    @staticmethod
    def _state_label(task: dict[str, Any]) -> str:
        state = task.get("state") or ""
        if state == TaskState.RUNNING.value and task.get("cancel_requested"):
            return "Cancelling…"
        if state == TaskState.QUEUED.value and (task.get("attempt") or 0) > 0:
            return "Retrying"
        if state_look.outcome(task) == state_look.TIMED_OUT:
            return "Timed out"
        return _STATE_LABELS.get(state, state)

    @staticmethod
    def _progress_text(task: dict[str, Any]) -> str:
        state = task.get("state")
        if state == TaskState.RUNNING.value:
            fraction = task.get("progress")
            return "…" if fraction is None else f"{fraction * 100:.0f} %"
        if state == TaskState.SUCCEEDED.value:
            return "done"
        if state_look.outcome(task) == state_look.TIMED_OUT:
            return "timed out"
        if state in (TaskState.FAILED.value, TaskState.CANCELLED.value):
            return state
        return ""

    def sort_key(self, row: int, column: int) -> Any:
        """What `SortRole` gives for a cell, read without a trip through Qt."""
        return self._sort_key(self._rows[len(self._rows) - 1 - row], column)

    def _search_text(self, row: _Row) -> tuple[str, ...]:
        task = row.task
        texts = [row.id, self._display(row, self.Column.TASK), str(task.get("task") or ""),
                 str(task.get("message") or ""),
                 json.dumps(task.get("args"), ensure_ascii=False, default=str)]  # fmt: skip
        if task.get("result") is not None:
            texts.append(json.dumps(task["result"], ensure_ascii=False, default=str)[:20_000])
        return tuple(texts)

    def _sort_key(self, row: _Row, col: int) -> Any:
        if col == self.Column.SUBMITTED:
            return row.created
        if col == self.Column.DURATION:
            seconds = row.duration()
            return -1.0 if seconds is None else seconds
        if col == self.Column.PROGRESS:
            fraction = row.task.get("progress")
            return -1.0 if fraction is None else float(fraction)
        return self._display(row, col).casefold()

    def _tooltip(self, row: _Row, col: int) -> str | None:
        task = row.task
        if col == self.Column.TASK:
            return f"{self._display(row, col)}\n{task.get('task')} · {row.id}"
        if col == self.Column.STATE:
            return self._attempts_tooltip(task)
        if col == self.Column.MESSAGE or (col == self.Column.RESULT and task.get("error")):
            error = task.get("error")
            if isinstance(error, dict):
                text = f"{error.get('message') or ''} ({error.get('code') or 'error'})"
                if waiting_attempt(task) is not None:
                    text = f"Last attempt failed: {text}"
            else:
                text = task.get("message") or ""
            forced = self._forced_cancel(row.id) if col == self.Column.MESSAGE else None
            if forced is not None:
                text = _capitalized(str(forced.data.get("reason") or text))
            return taskview.shorten(text, _TOOLTIP_CHARS) or None
        if col == self.Column.RESULT and task.get("result") is not None:
            pretty = json.dumps(task["result"], indent=2, ensure_ascii=False, default=str)
            return taskview.shorten(pretty, _TOOLTIP_CHARS)
        if col == self.Column.SUBMITTED:
            return task.get("created_at")
        return None

    @staticmethod
    def _attempts_tooltip(task: dict[str, Any]) -> str | None:
        """The State cell's tooltip: attempts, lost attempts and the time limit."""
        most = task.get("max_attempts")
        attempt = task.get("attempt") or 0
        upcoming = waiting_attempt(task)
        lines = []
        if upcoming is not None:
            lines.append(f"Waiting to run attempt {attempt_text(upcoming, most)}")
        elif attempt:
            lines.append(f"Attempt {attempt_text(attempt, most)}")
        lost = task.get("lost_attempts") or 0
        if lost:
            lines.append(f"{lost} attempt{'s' if lost != 1 else ''} lost (the process running "
                         f"{'them' if lost != 1 else 'it'} died)")  # fmt: skip
        limit = task.get("timeout")
        if isinstance(limit, int | float) and limit > 0:
            lines.append(f"Time limit: {format_seconds(limit)} per attempt")
        return "\n".join(lines) or None


def _search_key(text: str, states: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """A search as the model keys its pages: its text ("" when blank) and sorted states."""
    return (text if text.strip() else "", tuple(sorted(states)))


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


class TaskFilterProxy(QSortFilterProxyModel):
    """The task table filtered by state and by text, sortable by any column.

    The text is a search (`services.core.search`: every word must be a word of the task's
    name or title, id, arguments, message or result; the last one may be the start of
    one). A task the server's search returned for this text is shown too, so what the
    model loaded for a search shows even where the two disagree on a word's edges.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._states: frozenset[str] = frozenset()
        self._text = ""
        self._query: search.Query = search.Query(())
        self.setSortRole(TaskModel.SortRole)

    def setSourceModel(self, model: Any) -> None:  # noqa: N802 (Qt's name)
        old = self.sourceModel()
        if isinstance(old, TaskModel):
            old.search_changed.disconnect(self._on_model_search_changed)
        super().setSourceModel(model)
        if isinstance(model, TaskModel):
            model.search_changed.connect(self._on_model_search_changed)

    def states(self) -> frozenset[str]:
        return self._states

    def set_states(self, states: Iterable[str] | None) -> None:
        """Show only tasks in these states (TaskState values); None or empty: all."""
        new = frozenset(states or ())
        if new != self._states:
            self._change_filter(lambda: setattr(self, "_states", new))

    def set_text(self, text: str) -> None:
        """Show only tasks matching the search `text`; empty (or not understood): all."""
        try:
            query = search.parse(text)
        except search.SearchSyntaxError:
            query = search.Query(())
        if query != self._query:
            self._change_filter(lambda: setattr(self, "_query", query))
        self._text = text

    def _on_model_search_changed(self) -> None:
        if self._query:
            self._change_filter(lambda: None)

    def _change_filter(self, change: Any) -> None:
        # beginFilterChange() arrived in Qt 6.9 and deprecates invalidateRowsFilter().
        if hasattr(self, "beginFilterChange"):
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older PySide6
            change()
            self.invalidateRowsFilter()

    def multiData(self, index: AnyIndex, roles: QModelRoleDataSpan) -> None:  # noqa: N802
        # Qt's proxy answers it by asking the model for one role at a time (seven per cell
        # painted, each mapped and sent through Qt): the model answers them all at once.
        model = self.sourceModel()
        if isinstance(model, TaskModel):
            model.multiData(self.mapToSource(index), roles)
        else:
            super().multiData(index, roles)

    def lessThan(self, source_left: AnyIndex, source_right: AnyIndex) -> bool:
        # Straight from the model's rows: the default compares two SortRole QVariants, and
        # the round trips through Qt are most of the time a sort of thousands of rows takes.
        model = self.sourceModel()
        if isinstance(model, TaskModel):
            col = source_left.column()
            return bool(model.sort_key(source_left.row(), col)
                        < model.sort_key(source_right.row(), col))  # fmt: skip
        return super().lessThan(source_left, source_right)

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        # Asked for every changed row at every flush: nothing to look at without a filter.
        if not self._states and not self._query:
            return True
        index = self.sourceModel().index(source_row, 0, source_parent)
        if self._states and index.data(TaskModel.StateRole) not in self._states:
            return False
        if not self._query:
            return True
        search_texts = index.data(TaskModel.SearchRole)
        if not search_texts:
            return True
        model = self.sourceModel()
        if isinstance(model, TaskModel) and model.search_hit(search_texts[0]):
            return True
        return self._query.matches(search_texts)
