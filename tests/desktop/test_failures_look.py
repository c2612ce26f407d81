"""Failures that look like failures: on the real app and services, a task that failed on an
existing destination is a red row with its own icon (in light and dark palettes), says
why in words, shows its code apart, and offers "Run again with Overwrite" and "Edit and run
again"; and a row known only from its events still knows how many attempts it has."""

from __future__ import annotations

import os
import signal

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QPushButton

from desktop.task_model import TaskModel
from tests.desktop import test_app
from tests.desktop.test_app import WAIT

running, runtime = test_app.running, test_app.runtime  # the real app, as test_app runs it
FG, DECO = Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.DecorationRole
COL = TaskModel.Column


def light_palette() -> QPalette:
    return QApplication.style().standardPalette()


def dark_palette() -> QPalette:
    p = QPalette()
    for role, color in ((QPalette.ColorRole.Window, "#2b2b2b"),
                        (QPalette.ColorRole.Base, "#1e1e1e"),
                        (QPalette.ColorRole.AlternateBase, "#262626"),
                        (QPalette.ColorRole.Text, "#e6e6e6"),
                        (QPalette.ColorRole.WindowText, "#e6e6e6"),
                        (QPalette.ColorRole.Button, "#333333")):  # fmt: skip
        p.setColor(role, QColor(color))
    return p


def icon_image(icon):
    return icon.pixmap(16, 16).toImage()


def test_a_failed_row_looks_failed_and_offers_what_to_do_next(running, tmp_path):
    app, w, qtbot = running.app, running.window, running.qtbot
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello\n" * 100)
    dest = tmp_path / "out.zip"
    # The destination appears after the submit (accepted: it did not exist) and before the
    # task runs (the worker is stopped meanwhile): the task fails on it.
    worker = app.monitor._supervisor.pid("worker")
    os.kill(worker, signal.SIGSTOP)
    try:
        failed = running.run_task("files.archive", source=str(source), destination=str(dest))
        dest.write_bytes(b"precious")
    finally:
        os.kill(worker, signal.SIGCONT)
    running.wait_state(failed, "failed")
    model = app.model
    task = model.task_by_id(failed)
    assert task["error"]["code"] == "destination_exists"
    row = model.row_of(failed)
    message = model.index(row, COL.MESSAGE).data()
    assert message.startswith(str(dest)) and "already exists" in message
    assert not message.startswith("destination_exists")

    # The detail pane: the message in words, the code apart, and the ways out.
    w.select_task(failed)
    pane = w.detail
    qtbot.waitUntil(lambda: pane.error_view.isVisible(), timeout=WAIT)
    assert pane.error_view.message.text().startswith(str(dest))
    assert pane.error_view.code.text() == "Code: destination_exists"
    assert not pane.result.toPlainText().startswith("destination_exists")
    overwrite = pane.error_view.findChild(QPushButton, "overwrite_rerun_button")
    assert overwrite.isVisible() and w.overwrite_rerun_action.isEnabled()
    assert pane.error_view.findChild(QPushButton, "rerun_button").isVisible()

    # Edit and run again: the task's form, filled in, and what was wrong said at once.
    w.select_catalog_task("demo.answer")
    pane.error_view.findChild(QPushButton, "edit_rerun_button").click()
    assert w.catalog_list.currentItem().data(Qt.ItemDataRole.UserRole) == "files.archive"
    assert w.form.values() == task["args"]
    assert w.form.values()["destination"] == str(dest)
    assert w.form.errors() == {"destination": "already exists; turn on Overwrite to replace it"}

    # Run again with Overwrite: a new task that replaces the destination.
    before = {t["id"] for t in model.all_tasks()}
    overwrite.click()
    qtbot.waitUntil(lambda: len(model.all_tasks()) == len(before) + 1, timeout=WAIT)
    (again,) = [t for t in model.all_tasks() if t["id"] not in before]
    assert again["args"]["overwrite"] is True
    running.wait_state(again["id"], "succeeded")
    assert dest.read_bytes()[:2] == b"PK"  # a zip now

    # A failed row and a succeeded one differ in colour and icon, readable on both palettes.
    from desktop import state_look

    ok_row, bad_row = model.row_of(again["id"]), model.row_of(failed)
    assert model.index(bad_row, COL.STATE).data(TaskModel.OutcomeRole) == "failed"
    saved = QApplication.palette()
    try:
        for palette in (light_palette(), dark_palette()):
            QApplication.setPalette(palette)
            base = palette.color(QPalette.ColorRole.Base)
            bad = model.index(bad_row, COL.STATE).data(FG)
            good = model.index(ok_row, COL.STATE).data(FG)
            assert bad is not None and good is not None and bad != good
            assert state_look.contrast(bad, base) >= 4.5
            assert state_look.contrast(good, base) >= 4.5
            assert model.index(bad_row, COL.MESSAGE).data(FG) == bad  # the message too
            assert model.index(ok_row, COL.MESSAGE).data(FG) is None
            bad_icon = model.index(bad_row, COL.STATE).data(DECO)
            good_icon = model.index(ok_row, COL.STATE).data(DECO)
            assert icon_image(bad_icon) != icon_image(good_icon)
        light = model.index(bad_row, COL.STATE).data(FG)
        QApplication.setPalette(light_palette())
        assert model.index(bad_row, COL.STATE).data(FG) != light  # chosen per palette
    finally:
        QApplication.setPalette(saved)


def test_a_row_known_from_its_events_says_attempt_n_of_m(running):
    # Submitted by another client: the app learns of it from its events alone.
    client = running.app.bridge.client
    import asyncio

    box: list[dict] = []
    fut = asyncio.ensure_future(client.submit("demo.answer", {"seconds": 30}))
    fut.add_done_callback(lambda f: box.append(f.result()))
    running.qtbot.waitUntil(lambda: bool(box), timeout=WAIT)
    task_id = box[0]["id"]
    running.wait_state(task_id, "running")
    model = running.app.model
    assert model.task_by_id(task_id)["max_attempts"] == 1
    row = model.row_of(task_id)
    assert model.index(row, COL.STATE).data(Qt.ItemDataRole.ToolTipRole).startswith(
        "Attempt 1 of 1")
    running.app.window.select_task(task_id)
    running.app.window.cancel_action.trigger()
    running.wait_state(task_id, "cancelled")
    # A cancelled row looks cancelled, not failed and not succeeded.
    assert model.index(row, COL.STATE).data(TaskModel.OutcomeRole) == "cancelled"


def test_the_error_view_keeps_the_traceback_folded_and_tells_a_cancel_apart(qtbot):
    from desktop.ui.error_view import ErrorView

    view = ErrorView()
    qtbot.addWidget(view)
    view.show()
    failed = {"state": "failed", "args": {"seconds": 1}, "error": {
        "code": "exception", "message": "OSError: disk busy",
        "traceback": "Traceback (most recent call last):\n  ...\nOSError: disk busy"}}
    view.show_task(failed)
    assert view.message.text() == "OSError: disk busy"  # no code in front of it
    assert view.code.text() == "Code: exception"
    assert view.traceback_toggle.isVisible() and not view.traceback.isVisible()
    view.traceback_toggle.click()
    assert view.traceback.isVisible() and "OSError" in view.traceback.toPlainText()
    assert not view.overwrite_button.isVisible()  # no destination in the way
    view.show_task({"state": "cancelled", "message": "Cancelled", "args": {}},
                   "stopped by force after 5 s")
    assert view.message.text() == "Stopped by force after 5 s"
    assert not view.code.isVisible() and not view.traceback_toggle.isVisible()
    view.show_task({"state": "succeeded", "result": 42})
    assert not view.isVisible()


def test_a_program_that_exits_non_zero_is_a_failed_row(running):
    """`false` exits 1: the row is failed (not "Succeeded"), says so in words, and the
    detail pane shows the code apart; an exit code the task accepts is a success."""
    app, w, qtbot = running.app, running.window, running.qtbot
    failed = running.run_task("process.run", program="false")
    accepted = running.run_task("process.run", program="false", ok_exit_codes=[0, 1])
    running.wait_state(failed, "failed")
    running.wait_state(accepted, "succeeded")
    model = app.model
    task = model.task_by_id(failed)
    assert task["error"]["code"] == "exit_status"
    row = model.row_of(failed)
    assert model.index(row, COL.STATE).data(TaskModel.OutcomeRole) == "failed"
    assert "exited with code 1" in model.index(row, COL.MESSAGE).data()
    assert model.task_by_id(accepted)["result"]["exit_code"] == 1
    w.select_task(failed)
    qtbot.waitUntil(lambda: w.detail.error_view.isVisible(), timeout=WAIT)
    assert w.detail.error_view.code.text() == "Code: exit_status"
