"""Layout and state of the main window, widget-level (no services): a small window gives the
table priority, the empty table says why it is empty (loading, no tasks, no match), status
messages expire, a file dropped on a catalog entry opens its form with it, the form's values
survive a new window on the same settings, and the Timeline merges runs of progress."""

from __future__ import annotations

import itertools
import time

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QIcon
from PySide6.QtWidgets import QApplication

from desktop.services import SERVICE_NAMES
from desktop.task_model import TaskModel
from desktop.ui.detail_pane import DetailPane
from desktop.ui.main_window import MainWindow
from services.core import taskview
from services.core.events import Event, EventType
from tests.desktop.test_task_form import BUILTIN_SPECS, editor


def make_window(qtbot, tmp_path, model: TaskModel | None = None) -> MainWindow:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model or TaskModel(), SERVICE_NAMES, str(tmp_path), QIcon(), settings)
    qtbot.addWidget(window)
    window.set_catalog(BUILTIN_SPECS)
    return window


def test_a_small_window_gives_the_table_priority(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    window.resize(640, 420)
    window.show()
    qtbot.waitExposed(window)
    window.select_catalog_task("files.archive")
    left = window.main_splitter.widget(0)  # the catalog and the form
    qtbot.waitUntil(lambda: window.table.width() > left.width(), timeout=3000)
    assert left.width() > 0  # still there, narrower (or collapsed by the user)
    # back to a roomy window: the form's column has room to read its paths again
    window.resize(1240, 760)
    qtbot.waitUntil(lambda: left.width() >= 300, timeout=3000)


def test_a_small_window_shows_more_of_the_table_than_of_a_failed_tasks_detail(qtbot, tmp_path):
    """A failed task's detail (error view, buttons, tabs) must not push the table down to two
    rows in a small window: the detail scrolls instead."""
    model = TaskModel()
    window = make_window(qtbot, tmp_path, model)
    now = time.time()
    for i in range(12):
        task = taskview.new_task(f"{i:032x}", "files.archive",
                                 {"source": "/tmp", "destination": "/home/me/photos.zip"}, now + i)
        task.update(state="failed", error={"code": "destination_exists", "message":
                                           "/home/me/photos.zip already exists",
                                           "traceback": "Traceback...\n" * 20})  # fmt: skip
        model.upsert(task)
    window.resize(640, 420)
    window.show()
    qtbot.waitExposed(window)
    window.select_task(f"{11:032x}")
    qtbot.waitUntil(lambda: window.detail.error_view.isVisible(), timeout=3000)
    detail_box = window.right_splitter.widget(1)
    qtbot.waitUntil(lambda: window.table.height() >= detail_box.height(), timeout=3000)
    row = window.table.verticalHeader().defaultSectionSize()
    assert window.table.viewport().height() >= 3 * row


def test_the_log_dock_takes_a_strip_not_the_forms_height(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    window.select_catalog_task("files.archive")
    window.logs_action.trigger()
    qtbot.waitUntil(window.log_dock.isVisible, timeout=3000)
    qtbot.waitUntil(lambda: window.log_dock.height() <= 0.3 * window.height(), timeout=3000)
    assert window.form.height() > window.log_dock.height()


def test_the_empty_table_says_why(qtbot, tmp_path):
    from desktop.ui.empty_state import EMPTY_TEXT, LOADING_TEXT, NO_MATCH_TEXT

    model = TaskModel()
    window = make_window(qtbot, tmp_path, model)
    window.show()
    hint = window.empty_state
    assert hint.isVisible() and hint.text() == LOADING_TEXT  # before the history arrives
    window.set_loading(False)
    assert hint.isVisible() and hint.text() == EMPTY_TEXT
    task = taskview.new_task("a" * 32, "demo.answer", {"seconds": 1}, time.time())
    del task["seq"]
    model.upsert(task)
    assert not hint.isVisible()
    window.search.setText("nothing-like-this")
    assert hint.isVisible() and hint.text().startswith(NO_MATCH_TEXT)
    window.search.clear()
    assert not hint.isVisible()


def test_status_messages_expire_and_errors_stay_longer(qtbot, tmp_path, monkeypatch):
    import desktop.ui.main_window as mw

    window = make_window(qtbot, tmp_path)
    window.show_status("Submitted The answer.", 100)
    assert window.status_message.text() == "Submitted The answer."
    qtbot.waitUntil(lambda: window.status_message.text() == "", timeout=3000)
    window.show_error("Could not cancel: gone")
    assert window._status_timer.remainingTime() > mw.STATUS_MS
    window.show_status("Starting services…", 0)  # 0: until the next message
    assert not window._status_timer.isActive()


def _drop_on(widget, pos: QPoint, path: str) -> QDropEvent:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(path)])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, QDragEnterEvent(pos, *args))
    move = QDragMoveEvent(pos, *args)
    QApplication.sendEvent(widget, move)
    assert move.isAccepted()
    drop = QDropEvent(QPointF(pos), *args)
    QApplication.sendEvent(widget, drop)
    return drop


def test_a_file_dropped_on_a_catalog_entry_opens_its_form_with_it(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    window.show()
    qtbot.waitExposed(window)
    window.select_catalog_task("demo.answer")
    items = window.catalog_list
    item = next(items.item(i) for i in range(items.count())
                if items.item(i).data(Qt.ItemDataRole.UserRole) == "files.checksum")
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"x")
    drop = _drop_on(items.viewport(), items.visualItemRect(item).center(), str(target))
    assert drop.isAccepted()
    assert window.form.spec()["name"] == "files.checksum"
    assert window.form.values()["path"] == str(target)


def test_form_values_survive_a_new_window_on_the_same_settings(qtbot, tmp_path):
    first = make_window(qtbot, tmp_path)
    first.select_catalog_task("files.checksum")
    editor(first.form, "path").setText(str(tmp_path))
    first.select_catalog_task("demo.answer")
    editor(first.form, "seconds").setValue(12)
    first.save_state()  # what closing the window does
    second = make_window(qtbot, tmp_path)
    second.select_catalog_task("demo.answer")
    assert second.form.values() == {"seconds": 12}
    second.select_catalog_task("files.checksum")
    assert second.form.values()["path"] == str(tmp_path)


# ------------------------------------------------------------------ the timeline


@pytest.fixture
def pane(qtbot) -> DetailPane:
    widget = DetailPane()
    qtbot.addWidget(widget)
    return widget


def rows(pane: DetailPane) -> list[tuple[str, str]]:
    tree = pane.timeline
    return [(tree.topLevelItem(i).text(1), tree.topLevelItem(i).text(2))
            for i in range(tree.topLevelItemCount())]


def test_the_timeline_merges_runs_of_progress_and_filters_by_type(pane):
    seq = itertools.count(1)
    events: list[Event] = []
    task = None

    def add(etype: EventType, attempt: int = 1, **data) -> None:
        nonlocal task
        ev = Event(next(seq), "t1", "", etype, time.time(), attempt, data)
        events.append(ev)
        task = taskview.apply_event(task, ev)

    add(EventType.QUEUED, 0, name="demo.answer", args={})
    add(EventType.STARTED, attempt=1)
    for i in range(40):
        add(EventType.PROGRESS, fraction=0.10 + i * 0.7 / 39, message=f"{40 - i} left")
    pane.show_task(task, "The answer", events, [])
    assert rows(pane)[2] == ("progress", "10 % → 80 %, 40 events · 1 left")
    add(EventType.PROGRESS, fraction=0.85, message="almost")
    add(EventType.PROGRESS, fraction=0.9, message="done soon")
    pane.show_task(task, "The answer", events, [])  # appended to, not one row per event
    assert rows(pane)[2] == ("progress", "10 % → 90 %, 42 events · done soon")
    add(EventType.OUTPUT, lines=["hello"])
    add(EventType.PROGRESS, fraction=1.0, message="")
    add(EventType.SUCCEEDED, result=42)
    pane.show_task(task, "The answer", events, [])
    assert [r[0] for r in rows(pane)] == ["queued", "started", "progress", "output",
                                          "progress", "succeeded"]  # fmt: skip
    assert rows(pane)[4] == ("progress", "100 %")  # a run of one reads as before
    pane.timeline_view.set_filter("progress")
    assert rows(pane) == [("progress", "10 % → 100 %, 43 events")]
    pane.timeline_view.set_filter("started")
    assert [r[0] for r in rows(pane)] == ["started"]
    pane.timeline_view.set_filter("")
    assert len(rows(pane)) == 6


def test_a_timeline_drawn_again_reads_as_the_one_built_event_by_event(pane):
    seq = itertools.count(1)
    events: list[Event] = []
    for etype, attempt, data in [(EventType.QUEUED, 0, {"name": "demo.answer", "args": {}}),
                                 (EventType.STARTED, 1, {"attempt": 1})]:  # fmt: skip
        events.append(Event(next(seq), "t1", "", etype, time.time(), attempt, data))
    for i in range(30):
        events.append(Event(next(seq), "t1", "", EventType.PROGRESS, time.time(), 1,
                            {"fraction": i / 30, "message": f"{30 - i} left"}))  # fmt: skip
        if i == 10:
            events.append(Event(next(seq), "t1", "", EventType.OUTPUT, time.time(), 1,
                                {"lines": ["hello"]}))  # fmt: skip
    events.append(Event(next(seq), "t1", "", EventType.SUCCEEDED, time.time(), 1, {"result": 1}))
    view = pane.timeline_view
    for n in range(1, len(events) + 1):  # as a stream shows them
        view.show_events(events[:n])
    tree = view.tree

    def shown() -> list[tuple[str, ...]]:
        return [tuple(tree.topLevelItem(i).text(c) for c in range(3))
                + (tree.topLevelItem(i).toolTip(2),)
                for i in range(tree.topLevelItemCount())]  # fmt: skip

    built = shown()
    assert [r[1] for r in built] == ["queued", "started", "progress", "output", "progress",
                                     "succeeded"]  # fmt: skip
    view.show_events(events[:2] + events[-5:])  # fewer (a finished task's, settled): redrawn
    view.show_events(events)
    assert shown() == built
    assert view.counts.text() == f"{len(events)} events in 6 rows"
