"""The desktop app against real embedded services in a temp data dir (offscreen)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QLineEdit,
    QMessageBox,
    QToolButton,
    QWidget,
)

from desktop.app import DesktopApp, paint_on_the_gui_thread
from desktop.task_model import TaskModel
from tests.e2e.harness import pid_alive

WAIT = 20_000  # ms


class Running:
    """A DesktopApp running on the test's qasync loop."""

    def __init__(self, data_dir: Path, settings_file: Path, qtbot) -> None:
        self.qtbot = qtbot
        self.app = DesktopApp(data_dir, QSettings(str(settings_file), QSettings.Format.IniFormat))
        self.task = asyncio.ensure_future(self.app.run())
        qtbot.waitUntil(lambda: self.live, timeout=WAIT)
        qtbot.waitUntil(lambda: self.window.catalog_list.count() > 0, timeout=WAIT)

    @property
    def window(self):
        return self.app.window

    @property
    def live(self) -> bool:
        return self.window.lights.connection.state == "connected"

    def run_task(self, name: str, time_limit: float | None = None, **values) -> str:
        """Fill the form for `name` (and its Advanced time limit) and click Run; returns the
        new task's id."""
        w = self.window
        w.select_catalog_task(name)
        w.form.set_values(values)
        w.form.set_time_limit(time_limit)
        before = {t["id"] for t in self.app.model.all_tasks()}
        self.qtbot.mouseClick(w.form.run_button, Qt.MouseButton.LeftButton)
        self.qtbot.waitUntil(
            lambda: bool({t["id"] for t in self.app.model.all_tasks()} - before), timeout=WAIT)
        ids = {t["id"] for t in self.app.model.all_tasks()} - before
        assert len(ids) == 1
        return ids.pop()

    def state(self, task_id: str) -> str | None:
        task = self.app.model.task_by_id(task_id)
        return task["state"] if task else None

    def wait_state(self, task_id: str, state: str) -> None:
        self.qtbot.waitUntil(lambda: self.state(task_id) == state, timeout=WAIT)

    def quit(self) -> None:
        pids = self.app.monitor.pids()
        asyncio.ensure_future(self.app.quit(ask=False))
        self.qtbot.waitUntil(self.task.done, timeout=WAIT)
        assert self.task.result() == 0
        # after the app quits, no child process is left
        self.qtbot.waitUntil(lambda: not any(pid_alive(p) for p in pids), timeout=WAIT)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rt = tmp_path / "runtime"
    rt.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rt))
    return rt


@pytest.fixture
def running(tmp_path: Path, runtime: Path, aloop, qtbot) -> Iterator[Running]:
    r = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    yield r
    if not r.task.done():
        r.quit()


def test_run_demo_answer_from_the_form(running):
    task_id = running.run_task("demo.answer", seconds=0.5)
    progress = []
    running.app.model.task_changed.connect(
        lambda tid: progress.append(running.app.model.task_by_id(tid).get("progress")))
    running.wait_state(task_id, "succeeded")
    task = running.app.model.task_by_id(task_id)
    assert task["result"] == 42 and task["progress"] == 1.0
    seen = [p for p in progress if p is not None]
    assert len([p for p in seen if 0 < p < 1]) >= 2 and seen == sorted(seen)  # it advanced
    row = running.app.model.row_of(task_id)
    assert running.app.model.index(row, 6).data() == "42"  # the Result column


def test_cancel_a_running_task(running, qtbot):
    task_id = running.run_task("demo.answer", seconds=60)
    running.wait_state(task_id, "running")
    running.window.select_task(task_id)
    qtbot.keyClick(running.window.table, Qt.Key.Key_Delete)
    running.wait_state(task_id, "cancelled")
    # What happens was said: asked to stop, by force after the catalog's cancel_grace.
    assert running.window.status_message.text() == (
        "The answer: asked to stop; if it does not stop at a checkpoint within 5 s it is "
        "stopped by force.")


def test_a_failing_task_shows_its_error(running):
    task_id = running.run_task("process.run", program="/no/such/program")
    running.wait_state(task_id, "failed")
    running.window.select_task(task_id)
    running.qtbot.waitUntil(lambda: running.window.detail.error_view.code.text() ==
                            "Code: program_not_found", timeout=WAIT)  # fmt: skip


def test_server_field_errors_appear_beside_the_fields(running, tmp_path):
    w = running.window
    w.select_catalog_task("files.checksum")
    # Absolute, so the form lets it through; missing, so the server answers 422.
    w.form.set_values({"path": str(tmp_path / "does-not-exist")})
    running.qtbot.mouseClick(w.form.run_button, Qt.MouseButton.LeftButton)
    running.qtbot.waitUntil(lambda: "path" in w.form.errors(), timeout=WAIT)
    assert "no such" in w.form.errors()["path"]


def test_notifier_restart_reconnects_and_fills_in(running, qtbot):
    task_id = running.run_task("demo.answer", seconds=2)
    running.wait_state(task_id, "running")
    states = []
    running.app.bridge.connection_changed.connect(lambda s, _r: states.append(s))
    os.kill(running.app.monitor._supervisor.pid("notifier"), signal.SIGKILL)
    qtbot.waitUntil(lambda: "reconnecting" in states, timeout=WAIT)
    qtbot.waitUntil(lambda: states[-1] == "connected", timeout=WAIT)
    running.wait_state(task_id, "succeeded")  # the missed events were applied
    assert running.app.model.task_by_id(task_id)["result"] == 42


def test_restart_the_app_and_see_earlier_tasks(tmp_path, runtime, aloop, qtbot):
    first = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    task_id = first.run_task("demo.answer", seconds=0)
    first.wait_state(task_id, "succeeded")
    assert not first.window.form.advanced_expanded()  # collapsed the first time
    first.window.form.findChild(QToolButton, "advanced_toggle").click()
    first.quit()
    second = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    try:
        second.wait_state(task_id, "succeeded")  # from the history, not from events
        assert second.window.form.advanced_expanded()  # remembered, like the layout
        assert second.window.form.findChild(QToolButton, "advanced_toggle").isChecked()
    finally:
        second.quit()


def test_form_has_accessible_editors(running):
    running.window.select_catalog_task("demo.answer")
    editors = [e for e in running.window.form.findChildren(QWidget)
               if isinstance(e, QLineEdit | QAbstractSpinBox | QCheckBox | QComboBox)
               and not isinstance(e.parent(), QAbstractSpinBox)]  # a spin box's own line edit
    assert editors and all(e.accessibleName() for e in editors)
    for widget in (running.window.table, running.window.catalog_list, running.window.search):
        assert widget.accessibleName()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_quit_leaves_no_child(running):
    pids = running.app.monitor.pids()
    assert len(pids) == 3
    running.quit()
    assert not any(pid_alive(p) for p in pids)


def test_clear_finished_is_remembered(tmp_path, runtime, aloop, qtbot):
    first = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    done = first.run_task("demo.answer", seconds=0)
    first.wait_state(done, "succeeded")
    active = first.run_task("demo.answer", seconds=60)
    first.wait_state(active, "running")
    qtbot.waitUntil(lambda: "1 running" in first.window.windowTitle(), timeout=WAIT)
    first.window.clear_action.trigger()
    first.window.clear_box.button(QMessageBox.StandardButton.Cancel).click()  # asked first
    assert first.state(done) == "succeeded"
    first.window.clear_action.trigger()
    clear = next(b for b in first.window.clear_box.buttons() if b.text() == "Clear")
    clear.click()
    qtbot.waitUntil(lambda: first.state(done) is None, timeout=WAIT)
    assert first.state(active) == "running"
    qtbot.waitUntil(lambda: "Cleared" in first.window.status_message.text(), timeout=WAIT)
    first.quit()  # the running task goes back to the queue, to run next time
    second = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    try:
        second.wait_state(active, "running")
        assert second.state(done) is None  # still cleared
    finally:
        second.quit()


def test_a_second_launch_brings_the_window_to_the_front(running):
    from desktop.app import ask_running_instance, instance_key

    key = instance_key(running.app.data_dir) + "-test"
    running.app.listen_for_second_launch(key)
    running.window.showMinimized()
    running.qtbot.waitUntil(running.window.isMinimized, timeout=WAIT)
    assert ask_running_instance(key)
    running.qtbot.waitUntil(lambda: not running.window.isMinimized(), timeout=WAIT)
    assert not ask_running_instance(key + "-nobody")


def test_run_again_with_the_same_arguments(running, qtbot):
    first = running.run_task("demo.answer", time_limit=30, seconds=0.2)
    assert running.app.model.task_by_id(first)["timeout"] == 30  # the form's time limit
    running.wait_state(first, "succeeded")
    running.window.form.set_time_limit(None)
    running.window.select_task(first)
    before = {t["id"] for t in running.app.model.all_tasks()}
    qtbot.keyClick(running.window.table, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(running.app.model.all_tasks()) == len(before) + 1, timeout=WAIT)
    (again,) = [t for t in running.app.model.all_tasks() if t["id"] not in before]
    assert again["task"] == "demo.answer" and again["args"] == {"seconds": 0.2}
    assert again["timeout"] == 30  # and the same time limit
    assert running.window.form.time_limit() == 30  # the form shows what ran again
    running.wait_state(again["id"], "succeeded")


def test_a_time_limit_stops_the_task_and_the_table_says_so(running):
    task_id = running.run_task("demo.answer", time_limit=0.5, seconds=30)
    running.wait_state(task_id, "failed")
    model = running.app.model
    assert model.task_by_id(task_id)["error"]["code"] == "timeout"
    assert model.index(model.row_of(task_id), model.Column.MESSAGE).data() == (
        "Timed out after 0.5 s")


def test_a_plugin_that_fails_to_import_is_shown(tmp_path, runtime, aloop, qtbot):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text('[tasks]\nmodules = ["no_such_task_module"]\n')
    r = Running(data, tmp_path / "settings.ini", qtbot)
    try:
        qtbot.waitUntil(lambda: r.window.notice.isVisible(), timeout=WAIT)
        text = r.window.notice.text()
        assert "no_such_task_module" in text and "failed to import" in text
    finally:
        r.quit()


def test_the_app_attaches_to_a_serve_started_with_another_runtime_dir(tmp_path, runtime,
                                                                        aloop, qtbot):  # fmt: skip
    from tests.e2e.harness import start_serve

    data = tmp_path / "data"
    serve = start_serve(data, tmp_path / "other-runtime")  # its runtime file is not ours
    try:
        r = Running(data, tmp_path / "settings.ini", qtbot)
        assert r.app.monitor.attached_pid == serve.proc.pid
        assert not r.app.monitor.owns_services
        task_id = r.run_task("demo.answer", seconds=0)
        r.wait_state(task_id, "succeeded")
        r.quit()
        assert serve.proc.poll() is None  # the app leaves the instance it attached to alone
    finally:
        serve.stop()


def test_a_reset_after_pruning_reloads_the_table(running, qtbot):
    from services.core.states import TaskState
    from services.store import TaskStore

    old = running.run_task("demo.answer", seconds=0)
    running.wait_state(old, "succeeded")
    kept = running.run_task("demo.answer", seconds=0)
    running.wait_state(kept, "succeeded")
    reloaded = []
    running.app.bridge.tasks_reloaded.connect(lambda tasks, _as_of: reloaded.append(tasks))
    notifier = running.app.monitor._supervisor.pid("notifier")
    os.kill(notifier, signal.SIGSTOP)  # the app hears nothing more for a while
    store = TaskStore(running.app.data_dir / "herald.db")
    try:
        missed = running.run_task("demo.answer", seconds=0)  # its row comes from the submit
        qtbot.waitUntil(lambda: store.get_task(missed).state is TaskState.SUCCEEDED,
                        timeout=WAIT)  # fmt: skip
        with store._write() as c:  # both finished long ago, as far as retention goes
            c.execute("UPDATE tasks SET finished_at = 0 WHERE id IN (?, ?)", (old, missed))
        assert store.prune(older_than=86400).tasks == 2
    finally:
        os.kill(notifier, signal.SIGKILL)
        store.close()
    # The restarted notifier says "reset" (the app last saw a seq below what was pruned):
    # the app reloads, and both pruned tasks leave the table, the one it never saw end too.
    qtbot.waitUntil(lambda: bool(reloaded), timeout=WAIT)
    assert {t["id"] for t in reloaded[0]} == {kept}
    qtbot.waitUntil(lambda: running.state(old) is None and running.state(missed) is None,
                    timeout=WAIT)  # fmt: skip
    assert running.state(kept) == "succeeded"


def test_the_about_box_says_who_the_app_is_signed_in_as(running):
    from desktop.ui.about import about_text

    me = running.window.identity
    assert me is not None and me["principal"] == "local" and me["owner"] is True
    assert "Signed in as local (the owner)" in about_text(me)


@pytest.mark.slow
def test_many_tasks_streaming_end_with_every_row_as_the_server_has_it(tmp_path, runtime,
                                                                      aloop, qtbot):  # fmt: skip
    """40 tasks streaming progress at once, their events applied in slices and the views told
    in batches: every row ends in its final state, each task's progress only went forward
    from one flush to the next, its timeline holds the events the server recorded, each
    once and in order, and the selected row stays selected."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text("[worker]\nthreads = 40\n")
    running = Running(data, tmp_path / "settings.ini", qtbot)
    try:
        model, window, client = running.app.model, running.window, running.app.bridge.client
        seen: dict[str, list[float]] = {}

        def on_flushed(tid: str) -> None:  # what the views were told for the task
            task = model.task_by_id(tid)
            if task is not None and task.get("progress") is not None:
                seen.setdefault(tid, []).append(task["progress"])

        model.task_changed.connect(on_flushed)
        submitting = asyncio.gather(*(client.submit("demo.answer", {"seconds": 1.5})
                                      for _ in range(40)))  # fmt: skip
        qtbot.waitUntil(submitting.done, timeout=WAIT)
        ids = [t["id"] for t in submitting.result()]
        qtbot.waitUntil(lambda: model.row_of(ids[5]) is not None, timeout=WAIT)
        window.select_task(ids[5])
        qtbot.waitUntil(lambda: all(running.state(t) == "succeeded" for t in ids),
                        timeout=3 * WAIT)  # fmt: skip
        model.flush()
        for tid in ids:
            task = model.task_by_id(tid)
            assert (task["state"], task["progress"], task["result"], task["message"]) == (
                "succeeded", 1.0, 42, "42"), tid  # fmt: skip
            assert len(seen[tid]) >= 3 and seen[tid] == sorted(seen[tid]), tid
        proxy = window.proxy
        rows = {proxy.index(r, 0).data(TaskModel.TaskIdRole): r for r in range(proxy.rowCount())}
        for tid in ids:
            assert proxy.index(rows[tid], TaskModel.Column.STATE).data() == "Succeeded"
            assert proxy.index(rows[tid], TaskModel.Column.PROGRESS).data() == "done"
        created = [model.task_by_id(t)["created_at"] for t in sorted(ids, key=rows.__getitem__)]
        assert created == sorted(created, reverse=True)  # newest first
        assert window.selected_ids() == [ids[5]]
        recording = asyncio.gather(*(client.timeline(t) for t in ids))
        qtbot.waitUntil(recording.done, timeout=WAIT)
        for tid, recorded in zip(ids, recording.result(), strict=True):
            assert [e.seq for e in model.events(tid)] == [e.seq for e in recorded], tid
    finally:
        running.quit()


def test_the_window_is_painted_on_the_gui_thread_alone(tmp_path, runtime, qtbot, monkeypatch):
    """Qt's raster engine would hand big fills to its thread pool and wait: on a machine
    busy with the tasks, each wait for those threads is a freeze. The app turns it off
    before its window is painted (a user's own setting stays)."""
    monkeypatch.delenv("QT_NO_GUI_THREADPOOL", raising=False)
    app = DesktopApp(tmp_path / "data", QSettings(str(tmp_path / "s.ini"),
                                                  QSettings.Format.IniFormat))  # fmt: skip
    app.window.close_for_quit()  # never shown; closed without asking the app to quit
    assert os.environ["QT_NO_GUI_THREADPOOL"] == "1"
    monkeypatch.setenv("QT_NO_GUI_THREADPOOL", "yes")
    paint_on_the_gui_thread()
    assert os.environ["QT_NO_GUI_THREADPOOL"] == "yes"
