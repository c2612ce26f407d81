"""The task table model and its filter proxy: rows, signals, coalescing, timelines."""

from __future__ import annotations

import itertools
import sys
import time

import pytest
from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, QTimer
from PySide6.QtWidgets import QStyledItemDelegate, QTableView

from desktop.task_model import TaskFilterProxy, TaskModel
from services.core import taskview
from services.core.events import Event, EventType

T0 = 1_795_000_000.0
COL = TaskModel.Column
DISPLAY = Qt.ItemDataRole.DisplayRole

# The C++ QAbstractItemModelTester reports what it finds as Qt warnings.
strict_qt = pytest.mark.qt_log_level_fail("WARNING")


class Feed:
    """Events as the notifier sends them: seq and time always move forward."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.now = T0 + 100_000  # after every snapshot's own changes

    def event(self, task_id: str, etype: EventType, attempt: int = 0, /, **data) -> Event:
        self.now += 0.01
        return Event(next(self._seq), task_id, "", etype, self.now, attempt, data)

    def queued(self, task_id: str, name: str = "demo.answer", **args) -> Event:
        return self.event(task_id, EventType.QUEUED, name=name, args=args)

    def started(self, task_id: str, attempt: int = 1) -> Event:
        return self.event(task_id, EventType.STARTED, attempt, attempt=attempt)

    def progress(self, task_id: str, fraction: float | None, message: str = "") -> Event:
        return self.event(task_id, EventType.PROGRESS, 1, fraction=fraction, message=message)

    def output(self, task_id: str, *lines: str) -> Event:
        return self.event(task_id, EventType.OUTPUT, 1, lines=list(lines))

    def succeeded(self, task_id: str, result=42) -> Event:
        return self.event(task_id, EventType.SUCCEEDED, 1, result=result)

    def failed(self, task_id: str, message: str = "Boom") -> Event:
        return self.event(task_id, EventType.FAILED, 1, error={"code": "boom", "message": message})


def snapshot(task_id: str, minutes: float, state: str = "queued", name: str = "demo.answer",
             **fields) -> dict:  # fmt: skip
    """A task as GET /api/tasks returns it, submitted `minutes` after T0."""
    created = T0 + minutes * 60
    task = taskview.new_task(task_id, name, fields.pop("args", {}), created)
    del task["seq"]
    task.update(state=state, max_attempts=3)
    if state != "queued":
        task.update(attempt=1, started_at=taskview.iso(created + 1))
    if taskview.is_terminal(state):
        task.update(finished_at=taskview.iso(created + 3), updated_at=taskview.iso(created + 3))
    elif state == "running":
        task.update(updated_at=taskview.iso(created + 1))
    task.update(fields)
    return task


def ids(model: TaskModel) -> list[str]:
    return [model.task(r)["id"] for r in range(model.rowCount())]


def rows_changed(first: int, last: int) -> list[tuple]:
    """The dataChanged of a flush for rows first..last: every column but Submitted (which
    never changes: a view sorted by it has nothing to sort again)."""
    sub = COL.SUBMITTED
    return [((first, 0), (last, sub - 1), []), ((first, sub + 1), (last, 6), [])]


def progress_changed(first: int, last: int) -> list[tuple]:
    """The dataChanged of a flush for rows first..last where only progress events came:
    their Progress and Message cells, in ranges of at most 200 cells (over that, a table
    view repaints all it shows)."""
    return [((top, COL.PROGRESS), (min(last, top + 99), COL.MESSAGE), [])
            for top in range(first, last + 1, 100)]  # fmt: skip


def running_rows(n: int) -> TaskModel:
    """A model of `n` running tasks t000.. (no timer flush: the test flushes)."""
    model = TaskModel(tick_ms=3_600_000)
    model.load([snapshot(f"t{i:03}", i, "running") for i in range(n)])
    return model


def stream_progress(model: TaskModel, steps: tuple[float, ...]) -> None:
    """Each step's progress event for every row of `running_rows`, row after row."""
    feed = Feed()
    for step in steps:
        for i in range(model.rowCount()):
            model.apply_event(feed.progress(f"t{i:03}", step))


def record(signal) -> list[tuple]:
    """Every emission of `signal`, with model indexes as (row, column)."""
    calls: list[tuple] = []

    def on_emitted(*args):
        calls.append(tuple((a.row(), a.column()) if isinstance(a, QModelIndex) else a
                           for a in args))  # fmt: skip

    signal.connect(on_emitted)
    return calls


@strict_qt
def test_model_checks_through_loads_inserts_updates_and_removals(qtbot, qtmodeltester):
    model = TaskModel()
    qtmodeltester.check(model)
    feed = Feed()
    model.load([snapshot("b", 2, "running", progress=0.5), snapshot("a", 1, "succeeded",
                result={"path": "/tmp/out/y.zip"})])  # fmt: skip
    assert ids(model) == ["b", "a"]
    model.load([snapshot("old", 0, "failed", error={"code": "x", "message": "no"})])
    for tid in ("c", "d"):
        model.apply_event(feed.event(tid, EventType.QUEUED, name="files.archive", args={}))
    model.flush()
    assert ids(model) == ["d", "c", "b", "a", "old"]
    model.apply_events([feed.started("c"), feed.progress("c", 0.25, "zipping"),
                        feed.succeeded("c", {"path": "/x/c.zip"})])  # fmt: skip
    model.flush()
    model.remove_tasks(["b", "old", "d"])
    assert ids(model) == ["c", "a"]
    model.remove_tasks(model.finished_ids())
    assert model.rowCount() == 0


def test_python_model_tester_on_the_model_and_the_proxy(qtbot, qtmodeltester):
    model = TaskModel()
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy, force_py=True)
    model.load([snapshot(f"t{i}", i, ("queued", "running", "failed")[i % 3]) for i in range(9)])
    proxy.set_states({"running"})
    proxy.sort(COL.SUBMITTED, Qt.SortOrder.AscendingOrder)
    model.remove_tasks(["t1", "t2"])
    proxy.set_states(None)
    assert proxy.rowCount() == 7


def test_rows_are_newest_first_and_pages_merge(qtbot):
    model = TaskModel()
    inserted = record(model.rowsInserted)
    model.load([snapshot("c", 3), snapshot("b", 2), snapshot("a", 1)])  # newest first
    model.load([snapshot("z", -1), snapshot("y", -2)])  # the next, older page
    assert ids(model) == ["c", "b", "a", "z", "y"]
    assert [(first, last) for _, first, last in inserted] == [(0, 2), (3, 4)]
    changed = record(model.dataChanged)
    model.load([snapshot("b", 2, "running", updated_at=taskview.iso(T0 + 500))])
    assert ids(model) == ["c", "b", "a", "z", "y"]
    assert changed == rows_changed(1, 1)
    assert model.task_by_id("b")["state"] == "running"
    model.upsert(snapshot("b", 2, "queued"))  # older than what the model has: ignored
    assert model.task_by_id("b")["state"] == "running"
    model.upsert(snapshot("m", 2.5))  # lands between b and c
    assert ids(model)[:3] == ["c", "m", "b"]
    assert model.row_of("m") == 1 and model.row_of("nope") is None
    with pytest.raises(IndexError):
        model.task(99)


def test_a_progress_event_changes_that_row_only(qtbot):
    model = TaskModel(tick_ms=3_600_000)  # no Duration refresh in between
    model.load([snapshot(t, i, "running") for i, t in enumerate("abc")])
    changed = record(model.dataChanged)
    tasks_changed = record(model.task_changed)
    feed = Feed()
    with qtbot.waitSignal(model.dataChanged, timeout=2000):  # the flush timer
        model.apply_event(feed.progress("b", 0.45, "copying"))
        assert changed == []  # not yet: coalesced
    assert changed == progress_changed(1, 1)
    assert tasks_changed == [("b",)]
    index = model.index(1, COL.PROGRESS)
    assert index.data(TaskModel.ProgressRole) == 0.45
    assert index.data(DISPLAY) == "45 %"
    assert model.index(1, COL.MESSAGE).data(DISPLAY) == "copying"


def test_a_burst_of_events_is_one_flush(qtbot):
    model = running_rows(200)
    changed = record(model.dataChanged)
    tasks_changed = record(model.task_changed)
    stream_progress(model, (0.25, 0.5, 0.75))
    assert changed == []
    qtbot.waitUntil(lambda: len(changed) > 0, timeout=2000)
    # 600 events, one flush: two ranges of 100 neighbouring rows (200 cells), not 200 signals.
    assert changed == progress_changed(0, 199)
    assert len(tasks_changed) == 200
    assert all(model.task(r)["progress"] == 0.75 for r in range(200))


def test_events_of_one_row_are_one_data_changed_per_flush_with_the_latest(qtbot):
    model = TaskModel(tick_ms=3_600_000)
    model.load([snapshot(f"t{i}", i, "running") for i in range(5)])  # rows t4 .. t0
    changed = record(model.dataChanged)
    seen: list[tuple] = []
    model.dataChanged.connect(lambda top, *_: seen.append(
        (top.data(TaskModel.ProgressRole), model.index(top.row(), COL.MESSAGE).data())))
    feed = Feed()
    for flush in range(3):
        for n in range(1, 51):
            model.apply_event(feed.progress("t3", flush / 3 + n / 1000, f"step {flush}.{n}"))
        model.apply_event(feed.progress("t1", flush / 3, "other"))
        model.flush()
    # Rows 1 (t3) and 3 (t1) are not neighbours: one signal each per flush, for the cells
    # that changed (t1's message stays "other" after the first flush: its Progress only).
    progress_only = ((3, COL.PROGRESS), (3, COL.PROGRESS), [])
    assert changed == (progress_changed(1, 1) + progress_changed(3, 3)
                       + (progress_changed(1, 1) + [progress_only]) * 2)  # fmt: skip
    assert [seen[i] for i in (0, 2, 4)] == [(0.05, "step 0.50"), (1 / 3 + 0.05, "step 1.50"),
                                            (2 / 3 + 0.05, "step 2.50")]  # fmt: skip
    assert model.flushes == 3


class PaintedCells(QStyledItemDelegate):
    """Records the (row, column) of every cell a view paints."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: set[tuple[int, int]] = set()

    def paint(self, painter, option, index) -> None:
        self.cells.add((index.row(), index.column()))
        super().paint(painter, option, index)


def test_progress_for_more_rows_than_the_view_shows_repaints_only_those_cells(qtbot):
    model = running_rows(200)
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.setSortingEnabled(True)  # as the window: newest first
    view.sortByColumn(COL.SUBMITTED, Qt.SortOrder.DescendingOrder)
    painted = PaintedCells()
    view.setItemDelegate(painted)
    view.resize(900, 300)
    view.show()
    qtbot.waitUntil(lambda: len(painted.cells) > 0, timeout=2000)
    shown = {r for r, _ in painted.cells}
    assert 3 < len(shown) < 200  # a part of the table is in sight
    feed = Feed()
    for i in range(200):
        model.apply_event(feed.progress(f"t{i:03}", 0.5, "halfway"))
    painted.cells.clear()
    model.flush()
    qtbot.waitUntil(lambda: len(painted.cells) > 0, timeout=2000)
    qtbot.wait(50)  # whatever else the view would paint
    # Every row in sight shows its new progress and message; nothing else was redrawn (the
    # neighbouring Submitted cell may be touched at its edge).
    assert {r for r, c in painted.cells if c == COL.PROGRESS} >= shown
    assert {r for r, c in painted.cells if c == COL.MESSAGE} >= shown
    assert {c for _, c in painted.cells} <= {COL.PROGRESS, COL.MESSAGE, COL.SUBMITTED}
    assert view.model().index(0, COL.MESSAGE).data() == "halfway"


def test_a_flush_tells_of_every_task_it_changed_in_one_signal(qtbot):
    model = running_rows(200)
    batches = record(model.tasks_changed)
    one_by_one = record(model.task_changed)
    stream_progress(model, (0.25, 0.5))
    model.flush()
    assert len(batches) == 1 and sorted(batches[0][0]) == [f"t{i:03}" for i in range(200)]
    assert sorted(t for (t,) in one_by_one) == [f"t{i:03}" for i in range(200)]
    model.flush()  # nothing changed since
    assert len(batches) == 1


def test_the_table_reads_the_same_through_the_task_proxy(qtbot):
    """The proxy answers all the roles a delegate asks of a cell at once (multiData): what
    a view shows through it is what it shows through Qt's own proxy, asking role by role."""
    model = TaskModel(tick_ms=3_600_000)
    model.set_titles({"demo.answer": "The answer"})
    model.load([snapshot("q", 0), snapshot("r", 1, "running", progress=0.5, message="half"),
                snapshot("s", 2, "succeeded", result=42),
                snapshot("f", 3, "failed", error={"code": "boom", "message": "Boom"}),
                snapshot("c", 4, "cancelled", message="Cancelled")])  # fmt: skip
    shots = []
    for proxy in (TaskFilterProxy(), QSortFilterProxyModel()):
        proxy.setSourceModel(model)
        view = QTableView()
        qtbot.addWidget(view)
        view.setModel(proxy)
        view.resize(900, 300)
        shots.append(view.grab().toImage())
    assert shots[0] == shots[1]


def test_a_burst_taken_is_applied_in_slices_and_the_loop_runs_between(qtbot):
    model = TaskModel(tick_ms=3_600_000)
    model.load([snapshot(f"t{i:02}", i, "running") for i in range(50)])
    feed = Feed()
    burst = [feed.progress(f"t{i % 50:02}", (i // 50 + 1) / 200, f"n{i}") for i in range(10_000)]
    burst += [feed.succeeded(f"t{i:02}", i) for i in range(50)]
    finished = record(model.task_finished)
    model.take_events(burst)
    assert model.queued_events() == len(burst)  # nothing applied yet: the loop goes on
    # Timers scheduled during the burst fire before it is all applied, again and again.
    left: list[int] = []
    probe = QTimer(interval=0)
    probe.timeout.connect(lambda: left.append(model.queued_events()))
    probe.start()
    qtbot.waitUntil(lambda: model.queued_events() == 0, timeout=10_000)
    probe.stop()
    pending = [n for n in left if n > 0]
    assert len(pending) >= len(burst) // TaskModel.SLICE_EVENTS - 1
    steps = [a - b for a, b in zip([len(burst), *left], left, strict=False)]
    assert max(steps) <= TaskModel.SLICE_EVENTS  # bounded slices, one per loop turn
    model.flush()
    # Every event applied, in order: the final state of each task is there.
    assert all(model.task_by_id(f"t{i:02}")["state"] == "succeeded" for i in range(50))
    assert all(model.task_by_id(f"t{i:02}")["result"] == i for i in range(50))
    assert sorted(f for (f,) in finished) == [f"t{i:02}" for i in range(50)]
    assert model.events("t07")[-1].type is EventType.SUCCEEDED


@strict_qt
def test_model_checks_with_events_taken_in_slices(qtbot, qtmodeltester):
    model = TaskModel()
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(model)
    model.load([snapshot(f"s{i}", i, "running") for i in range(20)])
    feed = Feed()
    feed.now = T0 + 3600
    events = [feed.queued(f"n{i:03}") for i in range(600)]
    events += [feed.progress(f"s{i % 20}", i / 1000) for i in range(600)]
    model.take_events(events)
    qtbot.waitUntil(lambda: model.queued_events() == 0 and model.rowCount() == 620,
                    timeout=10_000)  # fmt: skip
    assert proxy.rowCount() == 620


def test_new_tasks_in_a_burst_are_inserted_together(qtbot):
    model = TaskModel()
    model.load([snapshot("old", 0)])
    inserted = record(model.rowsInserted)
    feed = Feed()
    feed.now = T0 + 3600
    for i in range(50):
        model.apply_event(feed.queued(f"n{i:02}", n=i))
    assert model.rowCount() == 1
    assert model.task_by_id("n07")["args"] == {"n": 7}  # known before it is shown
    qtbot.waitUntil(lambda: model.rowCount() == 51, timeout=2000)
    assert [(first, last) for _, first, last in inserted] == [(0, 49)]
    assert ids(model)[0] == "n49" and ids(model)[-1] == "old"
    model.apply_event(feed.queued("late"))
    assert model.row_of("late") == 0  # asking for its row shows it now


def test_events_apply_in_order_and_duplicates_are_ignored(qtbot):
    model = TaskModel()
    feed = Feed()
    evs = [feed.queued("a"), feed.started("a"), feed.progress("a", 0.3, "one"),
           feed.progress("a", 0.6, "two")]  # fmt: skip
    model.apply_events(evs)
    model.flush()
    tasks_changed = record(model.task_changed)
    model.apply_events([evs[2], evs[1], evs[3]])  # a replay after a reconnect
    model.flush()
    task = model.task_by_id("a")
    assert (task["state"], task["progress"], task["message"]) == ("running", 0.6, "two")
    assert [e.seq for e in model.events("a")] == [e.seq for e in evs]
    assert tasks_changed == []


def test_history_fetched_after_live_events_fills_the_timeline(qtbot):
    model = TaskModel()
    feed = Feed()
    early = [feed.queued("a"), feed.started("a"), feed.output("a", "one")]
    late = [feed.output("a", "two"), feed.progress("a", 0.5)]
    model.upsert(snapshot("a", 0, "running"))
    model.apply_events(late)
    model.apply_events(early)  # GET /api/tasks/a/events, answered after live ones
    assert [e.seq for e in model.events("a")] == [e.seq for e in early + late]
    assert model.output("a") == ["one", "two"]


def test_timeline_and_output_are_capped(qtbot):
    model = TaskModel(max_events=10, max_output_lines=25)
    feed = Feed()
    model.apply_events([feed.queued("a"), feed.started("a")])
    for i in range(30):
        model.apply_event(feed.progress("a", i / 30))
        model.apply_event(feed.output("a", f"line {2 * i}", f"line {2 * i + 1}"))
    model.apply_event(feed.succeeded("a"))
    kept = model.events("a")
    types = [e.type for e in kept]
    assert types[:2] == [EventType.QUEUED, EventType.STARTED]
    assert types[-1] is EventType.SUCCEEDED
    assert len(kept) == 13 and model.events_dropped("a") == 50
    assert model.output("a") == [f"line {i}" for i in range(35, 60)]
    assert model.output_dropped("a") == 35


def test_a_finished_task_keeps_its_last_progress_events_only(qtbot):
    model = TaskModel()
    feed = Feed()
    model.apply_events([feed.queued("a"), feed.started("a"), feed.output("a", "hello")])
    progress = [feed.progress("a", i / 200) for i in range(200)]
    model.apply_events(progress)
    assert len(model.events("a")) == 203
    model.apply_event(feed.succeeded("a"))
    kept = model.events("a")
    assert [e.type for e in kept[:3]] == [EventType.QUEUED, EventType.STARTED, EventType.OUTPUT]
    assert [e.seq for e in kept[3:-1]] == [e.seq for e in progress[-50:]]
    assert model.events_dropped("a") == 150
    model.apply_events(progress[:10])  # a history fetched later: not taken back in
    assert len(model.events("a")) == len(kept)


def test_task_finished_once_through_an_event(qtbot):
    model = TaskModel()
    finished = record(model.task_finished)
    model.load([snapshot("done", 0, "succeeded"), snapshot("run", 1, "running")])
    feed = Feed()
    with qtbot.waitSignal(model.task_finished, timeout=2000) as blocker:
        model.apply_event(feed.succeeded("run", 7))
    assert blocker.args == ["run"]
    model.apply_events([feed.failed("run"), feed.succeeded("run", 8)])
    model.upsert(snapshot("run", 1, "succeeded", updated_at=taskview.iso(T0 + 9999)))
    model.flush()
    assert finished == [("run",)]
    row = model.row_of("run")
    assert model.index(row, COL.RESULT).data(DISPLAY) == "7"
    assert model.index(row, COL.PROGRESS).data(DISPLAY) == "done"


def test_failed_task_cells_and_tooltips(qtbot):
    model = TaskModel()
    model.set_titles({"demo.answer": "The answer"})
    feed = Feed()
    model.apply_events([feed.queued("a"), feed.started("a"), feed.failed("a", "Disk full\nat x")])
    model.flush()
    cell = lambda col, role=DISPLAY: model.index(0, col).data(role)  # noqa: E731
    assert cell(COL.TASK) == "The answer"
    assert cell(COL.STATE) == "Failed"
    assert cell(COL.MESSAGE) == "Disk full"
    assert cell(COL.MESSAGE, Qt.ItemDataRole.ToolTipRole) == "Disk full\nat x (boom)"
    assert cell(COL.RESULT) == ""
    assert cell(COL.TASK, TaskModel.TaskIdRole) == "a"
    assert cell(COL.STATE, TaskModel.StateRole) == "failed"
    assert "demo.answer" in cell(COL.TASK, Qt.ItemDataRole.ToolTipRole)
    assert cell(COL.DURATION) == "0.0 s"
    assert model.headerData(COL.DURATION, Qt.Orientation.Horizontal) == "Duration"


def test_events_of_an_unknown_task_wait_for_it(qtbot):
    model = TaskModel()
    missing = record(model.task_missing)
    feed = Feed()
    queued, started = feed.queued("x"), feed.started("x")
    progress, second = feed.progress("x", 0.8, "almost"), feed.progress("x", 0.9, "nearly")
    model.apply_event(progress)
    model.apply_event(second)
    assert missing == [("x",)] and model.rowCount() == 0
    # The fetched task was read before those events were recorded.
    model.upsert(snapshot("x", 0, "running", updated_at=taskview.iso(started.ts)))
    task = model.task_by_id("x")
    assert (task["progress"], task["message"]) == (0.9, "nearly")
    assert queued.seq < started.seq


def test_removed_tasks_go_in_ranges_and_stay_gone(qtbot):
    model = TaskModel()
    states = ["succeeded", "running", "failed", "cancelled", "queued", "succeeded"]
    model.load([snapshot(f"t{i}", i, s) for i, s in enumerate(states)])
    assert ids(model) == ["t5", "t4", "t3", "t2", "t1", "t0"]
    assert model.finished_ids() == ["t5", "t3", "t2", "t0"]
    assert model.active_ids() == ["t4", "t1"]
    assert [t["id"] for t in model.all_tasks()] == ids(model)
    removed = record(model.rowsRemoved)
    model.remove_tasks(model.finished_ids())
    assert [(first, last) for _, first, last in removed] == [(5, 5), (2, 3), (0, 0)]  # bottom up
    assert ids(model) == ["t4", "t1"]
    model.apply_event(Feed().succeeded("t0"))
    model.flush()
    assert model.task_by_id("t0") is None and model.rowCount() == 2


def test_duration_of_running_rows_ticks(qtbot):
    model = TaskModel(tick_ms=20)
    states = ["running", "running", "succeeded", "running"]
    model.load([snapshot(f"t{i}", -i, s) for i, s in enumerate(states)])
    changed = record(model.dataChanged)
    qtbot.waitUntil(lambda: len(changed) >= 2, timeout=2000)
    roles = [int(DISPLAY), TaskModel.SortRole]
    assert changed[:2] == [((0, COL.DURATION), (1, COL.DURATION), roles),
                           ((3, COL.DURATION), (3, COL.DURATION), roles)]  # fmt: skip
    assert model.index(0, COL.DURATION).data(TaskModel.SortRole) > 0
    assert model.index(0, COL.DURATION).data(DISPLAY).endswith(("s", "min"))
    feed = Feed()
    feed.now = T0 + 10**6
    model.apply_events([feed.succeeded(t) for t in ("t0", "t1", "t3")])
    model.flush()
    assert not model.duration_ticking()


def test_filter_by_state_and_text(qtbot):
    model = TaskModel()
    model.set_titles({"report.csv": "CSV report"})
    model.load([
        snapshot("aaa111", 0, "running", name="files.archive", args={"folder": "/home/u/photos"}),
        snapshot("bbb222", 1, "failed", name="report.csv", message="Bad row 7"),
        snapshot("ccc333", 2, "succeeded", name="demo.answer"),
    ])  # fmt: skip
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)

    def shown():
        return sorted(proxy.index(r, 0).data(TaskModel.TaskIdRole) for r in range(proxy.rowCount()))

    proxy.set_states({"running", "failed"})
    assert shown() == ["aaa111", "bbb222"]
    proxy.set_states(None)
    cases = [("photos", ["aaa111"]), ("csv REPORT", ["bbb222"]), ("bad row", ["bbb222"]),
             ("ccc", ["ccc333"]), ("333", []), ("answer", ["ccc333"]),
             ("", ["aaa111", "bbb222", "ccc333"])]  # fmt: skip
    for text, expected in cases:
        proxy.set_text(text)
        assert shown() == expected, text
    proxy.set_text("files")
    proxy.set_states({"succeeded"})
    assert shown() == []
    assert proxy.states() == {"succeeded"}


def test_proxy_sorts_by_submitted_and_duration(qtbot):
    model = TaskModel()
    model.load([
        snapshot("slow", 0, "succeeded", finished_at=taskview.iso(T0 + 100)),
        snapshot("new", 5, "succeeded"),
        snapshot("queued", 3),
    ])  # fmt: skip
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    assert isinstance(proxy, QSortFilterProxyModel)

    def order():
        return [proxy.index(r, 0).data(TaskModel.TaskIdRole) for r in range(proxy.rowCount())]

    assert order() == ["new", "queued", "slow"]  # the model's own order
    proxy.sort(COL.SUBMITTED, Qt.SortOrder.AscendingOrder)
    assert order() == ["slow", "queued", "new"]
    proxy.sort(COL.DURATION, Qt.SortOrder.DescendingOrder)
    assert order() == ["slow", "new", "queued"]


def test_many_calls_into_qt_leave_the_interpreter_whole(qtbot):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None or True on many calls and
    aborts the interpreter (why pyproject.toml keeps PySide6 below 6.12): this would abort
    the whole test run."""
    model = TaskModel(tick_ms=3_600_000)
    proxy = TaskFilterProxy()
    proxy.setSourceModel(model)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.resize(800, 600)
    model.load([snapshot(f"t{i}", i, "running") for i in range(50)])
    feed = Feed()
    for step in range(30):  # some 3,000 emits, and data() answering None many times more
        for i in range(50):
            model.apply_event(feed.progress(f"t{i}", step / 30))
        model.flush()
        view.grab()
    assert sys.getrefcount(None) > 100 and sys.getrefcount(True) > 100


# ------------------------------------------------------------------ retries and limits


def retrying(feed: Feed, task_id: str, attempt: int = 1, *, delay: float = 8.0,
             reason: str = "failed", max_attempts: int = 3, **extra) -> Event:  # fmt: skip
    """A "retrying" event as the ledger records it, due `delay` seconds from now."""
    data = {"reason": reason, "next_attempt": attempt + 1, "delay": delay,
            "at": time.time() + delay if delay else None, "max_attempts": max_attempts,
            "lost_attempts": 0, **extra}  # fmt: skip
    if reason in ("failed", "requested"):
        data.setdefault("error", {"code": "exception", "message": "OSError: disk busy"})
    return feed.event(task_id, EventType.RETRYING, attempt, **data)


def message_of(model: TaskModel, task_id: str, role=DISPLAY):
    return model.index(model.row_of(task_id), COL.MESSAGE).data(role)


def test_a_task_waiting_for_a_retry_counts_down(qtbot):
    model = TaskModel(tick_ms=3_600_000)
    feed = Feed()
    model.apply_events([feed.queued("a"), feed.started("a"), retrying(feed, "a", delay=8)])
    model.flush()
    task = model.task_by_id("a")  # as services.core.taskview applied the events
    assert (task["state"], task["attempt"], task["max_attempts"]) == ("queued", 1, 3)
    assert task["next_attempt_at"] is not None
    assert message_of(model, "a") == "Attempt 2 of 3 · next try in 8 s · OSError: disk busy"
    assert model.index(0, COL.STATE).data(DISPLAY) == "Retrying"
    assert message_of(model, "a", Qt.ItemDataRole.ToolTipRole) == (
        "Last attempt failed: OSError: disk busy (exception)")
    assert model.index(0, COL.STATE).data(Qt.ItemDataRole.ToolTipRole) == (
        "Waiting to run attempt 2 of 3")
    assert model.waiting_ids() == ["a"] and model.retry_ticking()
    # The next attempt starts: no more countdown, no more timer.
    model.apply_event(feed.event("a", EventType.STARTED, 2, attempt=2))
    model.flush()
    assert message_of(model, "a") == ""
    assert model.waiting_ids() == [] and not model.retry_ticking()


@strict_qt
def test_the_countdown_refreshes_only_the_waiting_rows(qtbot, qtmodeltester):
    model = TaskModel(tick_ms=3_600_000, retry_tick_ms=20)
    qtmodeltester.check(model)
    feed = Feed()
    model.load([snapshot("run", 0, "running"), snapshot("done", 1, "succeeded")])
    model.apply_events([feed.queued("w1"), feed.started("w1"), retrying(feed, "w1", delay=1.5),
                        feed.queued("w2"), feed.started("w2"), retrying(feed, "w2", delay=60)])
    model.flush()
    assert ids(model) == ["w2", "w1", "done", "run"]
    assert message_of(model, "w2").startswith("Attempt 2 of 3 · next try in 1 min ·")
    first = message_of(model, "w1")
    assert first.startswith("Attempt 2 of 3 · next try in 2 s")
    changed = record(model.dataChanged)
    qtbot.waitUntil(lambda: message_of(model, "w1") != first, timeout=3000)
    assert message_of(model, "w1").startswith("Attempt 2 of 3 · next try in 1 s")
    assert changed, "the countdown was not announced"
    roles = [int(DISPLAY), TaskModel.SortRole]
    # One run of the two waiting rows, their Message only; never the others.
    assert all(c == ((0, COL.MESSAGE), (1, COL.MESSAGE), roles) for c in changed)
    qtbot.waitUntil(lambda: message_of(model, "w1").startswith(
        "Attempt 2 of 3 · next try now"), timeout=3000)  # fmt: skip
    model.remove_tasks(["w1", "w2"])
    assert not model.retry_ticking()


def test_a_waiting_task_loaded_from_the_api_counts_down_too(qtbot):
    model = TaskModel()
    waiting = snapshot("s", 0, "queued", attempt=1, max_attempts=4, lost_attempts=1,
                       timeout=30.0, message="Will retry: boom",
                       error={"code": "boom", "message": "boom"},
                       next_attempt_at=taskview.iso(time.time() + 125))  # fmt: skip
    model.load([waiting])
    assert message_of(model, "s") == "Attempt 2 of 4 · next try in 2 min 5 s · boom"
    assert model.retry_ticking()
    assert model.index(0, COL.STATE).data(Qt.ItemDataRole.ToolTipRole) == (
        "Waiting to run attempt 2 of 4\n1 attempt lost (the process running it died)\n"
        "Time limit: 30 s per attempt")


def test_a_lost_worker_is_retried_at_once(qtbot):
    model = TaskModel()
    feed = Feed()
    model.apply_events([feed.queued("a"), feed.started("a"),
                        retrying(feed, "a", delay=0, reason="worker_lost", max_attempts=4,
                                 lost_attempts=1, detail="killed by SIGSEGV")])  # fmt: skip
    model.flush()
    assert message_of(model, "a") == "Attempt 2 of 4 · Worker lost; retrying"
    assert model.task_by_id("a")["lost_attempts"] == 1
    assert not model.retry_ticking()  # nothing to count down


def test_timed_out_and_forced_cancel_say_so(qtbot):
    model = TaskModel()
    feed = Feed()
    model.apply_events([feed.queued("t"), feed.started("t"), feed.event(
        "t", EventType.FAILED, 1, error={"code": "timeout", "timeout": 30, "message":
                                         "Timed out after 30 s; the attempt was stopped."})])
    model.apply_events([feed.queued("f"), feed.started("f"), feed.event(
        "f", EventType.CANCEL_REQUESTED, 1), feed.event(
        "f", EventType.CANCELLED, 1, forced=True, grace=5,
        reason="stopped by force after 5 s: it did not stop at a checkpoint")])
    model.apply_events([feed.queued("c"), feed.started("c"), feed.event(
        "c", EventType.CANCELLED, 1, reason="stopped at a checkpoint")])  # fmt: skip
    model.flush()
    assert message_of(model, "t") == "Timed out after 30 s"
    assert message_of(model, "t", Qt.ItemDataRole.ToolTipRole) == (
        "Timed out after 30 s; the attempt was stopped. (timeout)")
    assert message_of(model, "f") == "Stopped by force after 5 s"
    assert message_of(model, "f", Qt.ItemDataRole.ToolTipRole) == (
        "Stopped by force after 5 s: it did not stop at a checkpoint")
    assert message_of(model, "c") == "Cancelled"
    assert model.task_by_id("f")["message"] == "Stopped by force after 5 s"  # as the ledger says


def test_a_reload_after_pruning_drops_the_rows_the_ledger_lost(qtbot):
    model = TaskModel()
    model.load([snapshot("old", 1, "succeeded"), snapshot("gone", 2, "queued"),
                snapshot("kept", 4, "succeeded"), snapshot("late", 9, "queued")])  # fmt: skip
    removed = record(model.rowsRemoved)
    # A list cut short (at the bridge's history limit) says nothing of the others.
    model.reload([snapshot("kept", 4, "succeeded")], as_of=0.0)
    assert ids(model) == ["late", "kept", "gone", "old"]
    # Rows created before the list was read and missing from it were pruned, whatever
    # state they still show (their end was among the pruned events); a row created after
    # (submitted meanwhile) stays.
    model.reload([snapshot("kept", 4, "succeeded"), snapshot("new", 5, "running")],
                 as_of=T0 + 6 * 60)  # fmt: skip
    assert ids(model) == ["late", "new", "kept"]
    assert len(removed) == 1  # neighbouring rows go in one range
    feed = Feed()
    model.apply_event(feed.succeeded("gone"))  # a late event of a pruned task
    model.flush()
    assert ids(model) == ["late", "new", "kept"]
