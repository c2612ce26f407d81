"""History that is safe and searchable, in the real app on real services: Clear finished
asks first, Delete removes a finished task with an undo (and cancels a running one), the
filter box searches the whole history on the server, and the table fetches pages as it
scrolls while live updates keep coming."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from services.store import TaskStore
from tests.desktop import test_app
from tests.desktop.test_app import WAIT, Running

running, runtime = test_app.running, test_app.runtime  # the real app's fixtures


def run(r: Running, name: str, **values) -> str:
    """`r.run_task`, once the form is free again (the task of the previous submit may show
    up through its event before the submit's answer frees the form)."""
    r.qtbot.waitUntil(lambda: not r.window.form.is_busy(), timeout=WAIT)
    return r.run_task(name, **values)


def on_server(r: Running, task_id: str) -> bool:
    """Whether the ledger still has the task (read from the service's own database)."""
    store = TaskStore(r.app.monitor.layout.ledger_db)
    try:
        return store.get_task(task_id) is not None
    finally:
        store.close()


def test_clear_finished_asks_first_and_can_be_told_not_to(running, qtbot):
    w = running.window
    done = run(running, "demo.answer", seconds=0)
    running.wait_state(done, "succeeded")
    w.clear_action.trigger()
    box = w.clear_box
    assert box is not None and box.isVisible() and "1 finished task" in box.text()
    box.button(QMessageBox.StandardButton.Cancel).click()  # declined: nothing happens
    qtbot.waitUntil(lambda: w.clear_box is None, timeout=WAIT)
    qtbot.wait(200)
    assert running.state(done) == "succeeded" and on_server(running, done)
    w.clear_action.trigger()
    w.clear_box.checkBox().setChecked(True)  # don't ask again
    next(b for b in w.clear_box.buttons() if b.text() == "Clear").click()
    running.qtbot.waitUntil(lambda: running.state(done) is None, timeout=WAIT)
    qtbot.waitUntil(lambda: not on_server(running, done), timeout=WAIT)
    assert w.settings.value("history/ask_before_clear", True, type=bool) is False
    again = run(running, "demo.answer", seconds=0)
    running.wait_state(again, "succeeded")
    w.clear_action.trigger()  # remembered: no question this time
    assert w.clear_box is None
    qtbot.waitUntil(lambda: running.state(again) is None, timeout=WAIT)


def test_delete_removes_with_an_undo_and_cancels_a_running_task(running, qtbot):
    w, app = running.window, running.app
    done = run(running, "demo.answer", seconds=0)
    active = run(running, "demo.answer", seconds=60)
    running.wait_state(done, "succeeded")
    running.wait_state(active, "running")
    w.select_task(done)
    qtbot.keyClick(w.table, Qt.Key.Key_Delete)
    assert running.state(done) is None  # gone from the table at once...
    assert w.undo_button.isVisible() and "Removed 1 task" in w.status_message.text()
    qtbot.mouseClick(w.undo_button, Qt.MouseButton.LeftButton)  # ...and back
    assert running.state(done) == "succeeded" and not w.undo_button.isVisible()
    assert on_server(running, done)
    app.removal.set_window(0.3)
    w.select_task(done)
    qtbot.keyClick(w.table, Qt.Key.Key_Delete)
    assert running.state(done) is None
    qtbot.waitUntil(lambda: not on_server(running, done), timeout=WAIT)  # after the window
    qtbot.waitUntil(lambda: not w.undo_button.isVisible(), timeout=WAIT)
    w.select_task(active)
    qtbot.keyClick(w.table, Qt.Key.Key_Delete)  # a running row: cancelled, not removed
    running.wait_state(active, "cancelled")
    assert on_server(running, active)


def test_the_filter_box_searches_the_server_and_the_table_pages_as_it_scrolls(running, qtbot):
    w, app = running.window, running.app
    qtbot.waitUntil(lambda: w.identity is not None, timeout=WAIT)
    store = TaskStore(app.monitor.layout.ledger_db)
    try:  # an old history the app has not loaded: 300 finished tasks
        with store.batch(isolated=False):
            for i in range(300):
                rec, _ = store.create_task(principal=w.identity["principal"], name="demo.answer",
                                           args={"seconds": 0, "label": f"zebra{i:03d}"})
                store.request_cancel(rec.id, w.identity["principal"])
    finally:
        store.close()
    app.bridge.page_size = 20
    model, table = app.model, w.table

    def loaded() -> int:
        return sum(1 for t in model.all_tasks() if "zebra" in str(t.get("args")))

    w.state_filter.setCurrentIndex(6)  # Cancelled: the server's first page of those
    # A page, or as many as the view needs to fill itself: not all of them.
    qtbot.waitUntil(lambda: loaded() >= 20 and model.canFetchMore(), timeout=WAIT)
    assert loaded() < 300
    for _ in range(3):  # scrolling to the end fetches the next page
        before = loaded()
        table.scrollToBottom()
        qtbot.waitUntil(lambda: loaded() > before and model.canFetchMore(),  # noqa: B023
                        timeout=WAIT)  # fmt: skip
    assert 80 <= loaded() < 300 and w.proxy.rowCount() == loaded()  # not all of it at once
    # The filter box: a word of a task far beyond what is loaded, found by the server.
    w.search.setText("zebra007")
    qtbot.waitUntil(lambda: w.proxy.rowCount() == 1, timeout=WAIT)
    assert "zebra007" in str(w.proxy.index(0, 0).data(model.TaskRole)["args"])
    w.search.setText("zeb")  # the word being typed is a prefix
    qtbot.waitUntil(lambda: w.proxy.rowCount() >= 80, timeout=WAIT)
    qtbot.waitUntil(model.canFetchMore, timeout=WAIT)  # a search pages too
    w.search.setText('"unbalanced')  # a search the server refuses says why
    qtbot.waitUntil(lambda: "double quote" in w.status_message.text(), timeout=WAIT)
    w.search.clear()
    w.state_filter.setCurrentIndex(0)
    # Live updates still arrive with a paged history: a new task appears and runs.
    new = run(running, "demo.answer", seconds=0)
    running.wait_state(new, "succeeded")
    assert model.row_of(new) is not None
