"""The form's path fields: what a path points at is checked as the user types (a folder
where a file is wanted, an existing destination while Overwrite is off), long paths are
elided in the middle with the whole path in the tooltip, files dropped on a field set it,
and each task's last values are remembered across windows with the same settings file."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QCheckBox

from desktop.ui.task_form import TaskForm
from services.core.errors import ValidationFailed
from tests.desktop.test_task_form import builtin, editor, form, shown_error

__all__ = ["form"]  # the fixture, shared with test_task_form


def test_a_folder_given_as_the_csv_file_is_called_a_folder(form, qtbot, tmp_path):
    form.set_spec(builtin("report.csv"))
    qtbot.keyClicks(editor(form, "source"), str(tmp_path))
    # said while typing, once the user pauses: no Run needed
    qtbot.waitUntil(lambda: shown_error(form, "source") == "Is a folder, not a file",
                    timeout=3000)  # fmt: skip
    assert form.validate()["source"] == "is a folder, not a file"
    (tmp_path / "a.csv").write_text("a\n1\n")
    form.set_values({"source": str(tmp_path / "a.csv"), "destination": str(tmp_path)})
    assert form.validate() == {"destination": "is a folder; give a file name"}


def test_an_existing_destination_is_flagged_until_overwrite_is_on(form, qtbot, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "out.zip").write_bytes(b"precious")
    form.set_spec(builtin("files.archive"))
    editor(form, "source").setText(str(tmp_path / "src"))
    editor(form, "destination").setText(str(tmp_path / "out.zip"))
    message = "Already exists; turn on Overwrite to replace it"
    qtbot.waitUntil(lambda: shown_error(form, "destination") == message, timeout=3000)
    overwrite: QCheckBox = editor(form, "overwrite")
    overwrite.setChecked(True)  # the same check, now with Overwrite on
    qtbot.waitUntil(lambda: shown_error(form, "destination") == "", timeout=3000)
    assert form.validate() == {}
    overwrite.setChecked(False)
    assert form.validate() == {"destination": message[0].lower() + message[1:]}


def test_the_server_says_the_same_about_the_same_paths(tmp_path):
    from services.tasks.catalog import load_catalog

    catalog = load_catalog()
    (tmp_path / "src").mkdir()
    (tmp_path / "out.zip").write_bytes(b"x")
    with pytest.raises(ValidationFailed) as info:
        catalog.get("files.archive").validate(
            {"source": str(tmp_path / "src"), "destination": str(tmp_path / "out.zip")})
    assert info.value.fields == {"destination": "already exists; turn on Overwrite to replace it"}
    assert catalog.get("files.archive").validate({
        "source": str(tmp_path / "src"), "destination": str(tmp_path / "out.zip"),
        "overwrite": True})["overwrite"] is True  # fmt: skip
    with pytest.raises(ValidationFailed) as info:
        catalog.get("report.csv").validate({"source": str(tmp_path),
                                             "destination": str(tmp_path / "r.html")})
    assert info.value.fields == {"source": "is a folder, not a file"}
    with pytest.raises(ValidationFailed) as info:
        catalog.get("process.run").validate({"program": "true", "cwd": str(tmp_path / "out.zip")})
    assert info.value.fields == {"cwd": "is a file, not a folder"}


def test_a_long_path_is_elided_in_the_middle_with_all_of_it_in_the_tooltip(form, qtbot):
    form.set_spec(builtin("files.checksum"))
    form.show()
    qtbot.waitExposed(form)
    line = editor(form, "path")
    assert line.width() >= line.fontMetrics().averageCharWidth() * 28  # readable: not 130 px
    long = "/home/someone/" + "very-long-folder-name/" * 8 + "the-file-at-the-end.csv"
    line.setText(long)
    line.clearFocus()
    shown = line.displayed_text()
    assert "…" in shown and shown.startswith("/home/") and shown.endswith(".csv")
    assert line.fontMetrics().horizontalAdvance(shown) < line.width()
    assert line.toolTip().startswith(long)
    assert line.text() == long  # only the picture is shortened
    line.setFocus()
    qtbot.waitUntil(line.hasFocus, timeout=3000)
    assert line.displayed_text() == long  # while editing, all of it


def _drop(widget, url: QUrl) -> QDropEvent:
    mime = QMimeData()
    mime.setUrls([url])
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, drop)
    return drop


def test_a_file_dropped_on_a_path_field_sets_it(form, tmp_path):
    form.set_spec(builtin("files.checksum"))
    target = tmp_path / "dropped here.txt"
    target.write_text("x")
    drop = _drop(editor(form, "path"), QUrl.fromLocalFile(str(target)))
    assert drop.isAccepted()
    assert editor(form, "path").text() == str(target)  # the path, not a file:// URL
    assert form.values()["path"] == str(target)


def test_each_tasks_last_values_survive_a_new_form_on_the_same_settings(qtbot, tmp_path):
    settings_file = str(tmp_path / "settings.ini")
    first = TaskForm(settings=QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(first)
    first.set_spec(builtin("demo.answer"))
    editor(first, "seconds").setValue(7)
    first.set_spec(builtin("files.checksum"))  # moving on keeps what was typed
    editor(first, "path").setText(str(tmp_path))
    with qtbot.waitSignal(first.run_requested):
        first.submit()
    first._settings.sync()
    second = TaskForm(settings=QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    second.set_spec(builtin("files.checksum"))
    assert second.values()["path"] == str(tmp_path)
    second.set_spec(builtin("demo.answer"))
    assert second.values() == {"seconds": 7}
