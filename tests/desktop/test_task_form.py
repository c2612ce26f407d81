"""The task form: built from real catalog entries and a synthetic one with every type,
checked the way the user meets it (typing, clicking, Ctrl+Return), offscreen."""

from __future__ import annotations

import os
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from desktop.ui.task_form import BUSY_TEXT, PLACEHOLDER_TEXT, RUN_TEXT, TaskForm
from services.core.errors import ValidationFailed
from services.tasks.catalog import load_catalog

CATALOG = load_catalog()
BUILTIN_SPECS = [spec.to_json() for spec in CATALOG]

SYNTHETIC = {
    "name": "test.every_type",
    "title": "Every type",
    "description": "A task with one parameter of each type.",
    "params": [
        {"name": "label", "type": "string", "title": "Label", "description": "A short label.",
         "required": True, "minimum": 2, "maximum": 20, "pattern": "[a-z][a-z0-9_]*"},
        {"name": "count", "type": "integer", "title": "Count", "description": "How many.",
         "required": False, "default": 3, "minimum": 1, "maximum": 10},
        {"name": "ratio", "type": "number", "title": "Ratio", "description": "A fraction.",
         "required": False, "default": 0.5, "minimum": 0, "maximum": 1},
        {"name": "verbose", "type": "boolean", "title": "Verbose", "description": "Say more.",
         "required": False, "default": True},
        {"name": "colour", "type": "choice", "title": "Colour", "description": "Pick one.",
         "required": False, "default": "green", "choices": ["red", "green", "blue"]},
        {"name": "input", "type": "path", "title": "Input & output", "description": "A file.",
         "required": True, "path_kind": "file"},
        {"name": "words", "type": "string_list", "title": "Words", "description": "Some words.",
         "required": False, "default": ["a", "b c"], "maximum": 3},
        {"name": "limit", "type": "integer", "title": "Limit", "description": "Optional cap.",
         "required": False, "default": None},
        {"name": "note", "type": "string", "title": "Note", "description": "Optional note.",
         "required": False, "default": None},
    ],
}  # fmt: skip

EDITOR_CLASSES = {
    "string": QLineEdit,
    "integer": QSpinBox,
    "number": QDoubleSpinBox,
    "boolean": QCheckBox,
    "choice": QComboBox,
    "path": QLineEdit,
    "string_list": QLineEdit,
    "integer_list": QLineEdit,
}


def builtin(name: str) -> dict[str, Any]:
    return next(s for s in BUILTIN_SPECS if s["name"] == name)


@pytest.fixture
def form(qtbot) -> TaskForm:
    widget = TaskForm()
    qtbot.addWidget(widget)
    widget.resize(480, 640)
    return widget


def editor(form: TaskForm, name: str) -> Any:
    """The editor of parameter `name` (each is named "field_<name>")."""
    return next(w for w in form.findChildren(QWidget) if w.objectName() == f"field_{name}")


def error_label(form: TaskForm, name: str) -> QLabel:
    return form.findChild(QLabel, f"error_{name}")


def shown_error(form: TaskForm, name: str) -> str:
    """The error text beside a field, "" if its label is hidden."""
    label = error_label(form, name)
    return label.text() if label.isVisibleTo(form) else ""


def general_error(form: TaskForm) -> str:
    label = form.findChild(QLabel, "general_error")
    return label.text() if label.isVisibleTo(form) else ""


def fill_line(qtbot, line: QLineEdit, text: str) -> None:
    """Replace a line edit's text by typing, as a user would."""
    line.selectAll()
    qtbot.keyClick(line, Qt.Key.Key_Delete)
    qtbot.keyClicks(line, text)


def type_into_spin(qtbot, spin: QSpinBox | QDoubleSpinBox, text: str) -> None:
    spin.selectAll()
    qtbot.keyClick(spin, Qt.Key.Key_Delete)
    qtbot.keyClicks(spin, text)


# ------------------------------------------------------------------ building


def test_without_a_spec_shows_a_placeholder_and_runs_nothing(form, qtbot):
    form.show()
    placeholders = [w for w in form.findChildren(QLabel) if w.text() == PLACEHOLDER_TEXT]
    assert placeholders and placeholders[0].isVisible()
    assert not form.run_button.isVisible()
    with qtbot.assertNotEmitted(form.run_requested):
        form.submit()
    assert form.values() == {} and form.validate() == {}


@pytest.mark.parametrize("spec", BUILTIN_SPECS, ids=lambda s: s["name"])
def test_every_builtin_task_gets_a_form(form, spec):
    form.set_spec(spec)
    form.show()
    assert form.spec() is spec
    titles = [w.text() for w in form.findChildren(QLabel) if w.objectName() == "task_title"]
    assert titles == [spec["title"]]
    description = form.findChild(QLabel, "task_description")
    assert description.text() == spec["description"] and description.wordWrap()
    for param in spec["params"]:
        widget = editor(form, param["name"])
        assert isinstance(widget, EDITOR_CLASSES[param["type"]])
        assert widget.isVisible()
        assert widget.accessibleName() == param["title"]
        assert param["description"] in widget.accessibleDescription()
        assert param["description"] in widget.toolTip()
        labels = [w for w in form.findChildren(QLabel) if w.buddy() is widget]
        assert len(labels) == 1
        assert labels[0].text().startswith(param["title"])
        assert ("*" in labels[0].text()) == param["required"]
        assert shown_error(form, param["name"]) == ""
    # Defaults are filled in; optional parameters defaulting to null are left out.
    defaults = {p["name"]: p["default"] for p in spec["params"]
                if not p["required"] and p["default"] is not None}  # fmt: skip
    assert form.values() == defaults
    # Only the required parameters without a value are flagged.
    required = {p["name"] for p in spec["params"] if p["required"]}
    assert set(form.validate()) == required


def test_synthetic_spec_builds_one_editor_of_each_type(form):
    form.set_spec(SYNTHETIC)
    for param in SYNTHETIC["params"]:
        assert isinstance(editor(form, param["name"]), EDITOR_CLASSES[param["type"]])
    count, ratio = editor(form, "count"), editor(form, "ratio")
    assert (count.minimum(), count.maximum(), count.value()) == (1, 10, 3)
    assert ratio.decimals() == 3 and ratio.maximum() == 1 and ratio.value() == 0.5
    assert 0 < ratio.singleStep() <= 0.1  # a sensible step in 0..1, not 1
    assert editor(form, "verbose").isChecked()
    assert editor(form, "colour").currentText() == "green"
    assert editor(form, "words").text() == "a 'b c'"
    assert editor(form, "label").placeholderText() == "A short label."
    assert editor(form, "label").validator() is not None
    # "&" in a title is shown as such, not taken as a mnemonic.
    label = next(w for w in form.findChildren(QLabel) if w.buddy() is editor(form, "input"))
    assert label.text() == "Input && output *:"


def test_unbounded_spin_boxes_are_wide(form):
    form.set_spec({"name": "t", "title": "T", "description": "", "params": [
        {"name": "n", "type": "integer", "title": "N", "description": "", "required": False,
         "default": 0},
        {"name": "x", "type": "number", "title": "X", "description": "", "required": False,
         "default": 0},
    ]})  # fmt: skip
    n, x = editor(form, "n"), editor(form, "x")
    assert n.minimum() < -1e9 and n.maximum() > 1e9
    assert x.minimum() <= -1e9 and x.maximum() >= 1e9 and x.singleStep() == 1


def test_an_unknown_type_is_edited_as_text(form):
    form.set_spec({"name": "t", "title": "T", "description": "", "params": [
        {"name": "when", "type": "datetime", "title": "When", "description": "",
         "required": True},
    ]})  # fmt: skip
    assert isinstance(editor(form, "when"), QLineEdit)
    editor(form, "when").setText("2026-01-01")
    assert form.validate() == {}
    assert form.values() == {"when": "2026-01-01"}


# ------------------------------------------------------------------ values


def test_values_have_the_declared_types(form, qtbot):
    form.set_spec(SYNTHETIC)
    fill_line(qtbot, editor(form, "label"), "job_1")
    type_into_spin(qtbot, editor(form, "count"), "7")
    type_into_spin(qtbot, editor(form, "ratio"), "0.25")
    qtbot.mouseClick(editor(form, "verbose"), Qt.MouseButton.LeftButton)
    editor(form, "colour").setCurrentIndex(2)
    fill_line(qtbot, editor(form, "input"), "/etc/hostname")
    fill_line(qtbot, editor(form, "words"), "one 'two three' \"four\"")
    values = form.values()
    assert values == {"label": "job_1", "count": 7, "ratio": 0.25, "verbose": False,
                      "colour": "blue", "input": "/etc/hostname",
                      "words": ["one", "two three", "four"]}  # fmt: skip
    assert type(values["count"]) is int
    assert type(values["ratio"]) is float
    assert type(values["verbose"]) is bool
    assert form.validate() == {}


def test_a_whole_number_still_goes_out_as_a_float(form):
    form.set_spec(builtin("demo.answer"))
    assert form.values() == {"seconds": 5.0}
    assert type(form.values()["seconds"]) is float


def test_optional_fields_without_default_mean_not_given(form, qtbot):
    form.set_spec(SYNTHETIC)
    limit, note = editor(form, "limit"), editor(form, "note")
    assert note.text() == "" and limit.text().strip() == ""
    assert "limit" not in form.values() and "note" not in form.values()
    type_into_spin(qtbot, limit, "12")
    fill_line(qtbot, note, "hello")
    assert form.values()["limit"] == 12 and form.values()["note"] == "hello"
    form.set_values({**form.values(), "limit": None, "note": None})
    assert "limit" not in form.values() and "note" not in form.values()


def test_nullable_boolean_and_choice_can_stay_unset(form):
    form.set_spec({"name": "t", "title": "T", "description": "", "params": [
        {"name": "flag", "type": "boolean", "title": "Flag", "description": "",
         "required": False, "default": None},
        {"name": "mode", "type": "choice", "title": "Mode", "description": "",
         "required": False, "default": None, "choices": ["fast", "slow"]},
        {"name": "pick", "type": "choice", "title": "Pick", "description": "",
         "required": True, "choices": ["x", "y"]},
    ]})  # fmt: skip
    assert editor(form, "flag").checkState() == Qt.CheckState.PartiallyChecked
    assert editor(form, "mode").currentText() == ""
    assert editor(form, "pick").currentIndex() == -1
    assert form.values() == {}
    assert form.validate() == {"pick": "is required"}
    form.set_values({"flag": False, "mode": "slow", "pick": "y"})
    assert form.values() == {"flag": False, "mode": "slow", "pick": "y"}
    assert form.validate() == {}


def test_set_values_round_trips_values(form, qtbot):
    form.set_spec(SYNTHETIC)
    wanted = {"label": "abc", "count": 9, "ratio": 0.125, "verbose": False, "colour": "red",
              "input": "~/data.csv", "words": ["x y", "it's", ""], "limit": -4,
              "note": "n"}  # fmt: skip
    form.set_values(wanted)
    assert form.values() == wanted
    assert editor(form, "words").text() == "'x y' 'it'\"'\"'s' ''"
    form.set_values(form.values())
    assert form.values() == wanted
    # Parameters left out go back to their defaults; unknown keys are ignored.
    form.set_values({"label": "abc", "input": "/x", "bogus": 1})
    assert form.values() == {"label": "abc", "input": "/x", "count": 3, "ratio": 0.5,
                             "verbose": True, "colour": "green", "words": ["a", "b c"]}  # fmt: skip


@pytest.mark.parametrize("spec", BUILTIN_SPECS, ids=lambda s: s["name"])
def test_a_filled_in_builtin_form_passes_the_servers_own_check(form, spec, tmp_path):
    """What the form sends is what the catalog accepts, for every real task."""
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    paths = {"file": str(tmp_path / "data.csv"), "directory": str(tmp_path),
             "any": str(tmp_path), "new_file": str(tmp_path / "out.bin")}  # fmt: skip
    form.set_spec(spec)
    for param in spec["params"]:
        if param["type"] == "path":
            editor(form, param["name"]).setText(paths[param["path_kind"]])
        elif param["required"] and param["type"] == "string":
            editor(form, param["name"]).setText("echo")
    assert form.validate() == {}
    CATALOG.get(spec["name"]).validate(form.values())  # raises ValidationFailed if not


# ------------------------------------------------------------------ checks before submitting


def test_required_fields_are_flagged_beside_them_and_block_the_run(form, qtbot):
    form.set_spec(builtin("files.archive"))
    with qtbot.assertNotEmitted(form.run_requested):
        form.submit()
    assert form.errors() == {"source": "is required", "destination": "is required"}
    assert shown_error(form, "source") == "Is required"
    assert shown_error(form, "destination") == "Is required"
    assert shown_error(form, "format") == ""
    assert editor(form, "source").property("invalid") is True
    assert editor(form, "format").property("invalid") is False
    assert "Error: is required" in editor(form, "source").accessibleDescription()


def test_spin_boxes_refuse_what_can_never_be_in_bounds(form, qtbot):
    form.set_spec(builtin("demo.answer"))
    spin = editor(form, "seconds")
    type_into_spin(qtbot, spin, "5000")
    assert spin.text() == "500"
    assert form.values() == {"seconds": 500.0}


BOUNDED = {"name": "t", "title": "T", "description": "", "params": [
    {"name": "n", "type": "integer", "title": "N", "description": "", "required": False,
     "default": 20, "minimum": 10, "maximum": 100},
    {"name": "x", "type": "number", "title": "X", "description": "", "required": True,
     "minimum": 2.5, "maximum": 50},
]}  # fmt: skip


def test_bounds_are_checked_on_what_was_typed(form, qtbot):
    form.set_spec(BOUNDED)
    n, x = editor(form, "n"), editor(form, "x")
    type_into_spin(qtbot, n, "5")  # on its way to 50, perhaps: the spin box keeps the text
    type_into_spin(qtbot, x, "1")
    assert n.text() == "5" and x.text() == "1"
    with qtbot.assertNotEmitted(form.run_requested):
        form.submit()
    assert form.errors() == {"n": "must be at least 10", "x": "must be at least 2.5"}
    assert shown_error(form, "n") == "Must be at least 10"
    assert shown_error(form, "x") == "Must be at least 2.5"
    qtbot.keyClicks(n, "5")
    qtbot.keyClicks(x, "2.75")
    assert form.validate() == {}
    assert form.values() == {"n": 55, "x": 12.75}


def test_a_required_number_starts_empty(form, qtbot):
    form.set_spec(BOUNDED)
    assert editor(form, "x").text().strip() == ""
    assert form.values() == {"n": 20}
    assert form.validate() == {"x": "is required"}
    form.set_values({"x": 3})
    assert form.values() == {"n": 20, "x": 3.0}


def test_lengths_are_checked(form):
    form.set_spec(SYNTHETIC)
    editor(form, "label").setText("a")  # setText skips the validator: the check still runs
    editor(form, "input").setText("/x")
    editor(form, "words").setText("a b c d")
    assert form.validate() == {"label": "must have at least 2 characters",
                               "words": "must have at most 3 items"}  # fmt: skip


def test_relative_paths_are_flagged(form, qtbot):
    form.set_spec(builtin("files.checksum"))
    line = editor(form, "path")
    fill_line(qtbot, line, "relative/file.txt")
    assert form.validate() == {"path": "must be an absolute path"}
    assert shown_error(form, "path") == "Must be an absolute path"
    fill_line(qtbot, line, "~/file.txt")  # absolute once ~ is expanded
    assert form.validate() == {}
    assert form.values()["path"] == "~/file.txt"  # the server expands it
    line.setText("~no_such_user_herald/x")  # stays relative: no such home
    assert form.validate() == {"path": "must be an absolute path"}
    line.setText("  /tmp/padded  ")
    assert form.values()["path"] == "/tmp/padded"


def test_pattern_is_enforced_while_typing_and_checked(form, qtbot):
    form.set_spec(SYNTHETIC)
    line = editor(form, "label")
    qtbot.keyClicks(line, "9Ab_c")  # the validator refuses what can never match
    assert line.text() == "b_c"
    line.setText("Bad")  # pasted in from code: still checked before submitting
    editor(form, "input").setText("/x")
    assert form.validate() == {"label": "must match [a-z][a-z0-9_]*"}
    assert shown_error(form, "label").startswith("Must match")


def test_unbalanced_quotes_in_a_list_are_flagged(form):
    form.set_spec(builtin("process.run"))
    editor(form, "program").setText("echo")
    editor(form, "args").setText('one "two')
    assert form.validate() == {"args": "no closing quotation"}
    assert "args" not in form.values()


def test_editing_a_field_clears_its_error_and_validate_clears_fixed_ones(form, qtbot):
    form.set_spec(builtin("files.archive"))
    form.validate()
    assert shown_error(form, "source") and shown_error(form, "destination")
    qtbot.keyClicks(editor(form, "source"), "/")
    assert shown_error(form, "source") == ""
    assert editor(form, "source").property("invalid") is False
    assert shown_error(form, "destination")  # untouched
    editor(form, "destination").setText("/tmp/a.zip")
    editor(form, "source").setText("relative")
    assert form.validate() == {"source": "must be an absolute path"}
    assert shown_error(form, "destination") == ""


def test_a_valid_form_emits_run_requested_with_the_values(form, qtbot, tmp_path):
    form.set_spec(builtin("process.run"))
    fill_line(qtbot, editor(form, "program"), "echo")
    fill_line(qtbot, editor(form, "args"), 'hello "big world"')
    editor(form, "cwd").setText(str(tmp_path))
    with qtbot.waitSignal(form.run_requested, timeout=1000) as blocker:
        qtbot.mouseClick(form.run_button, Qt.MouseButton.LeftButton)
    name, args, timeout = blocker.args
    assert name == "process.run"
    assert args == {"program": "echo", "args": ["hello", "big world"], "cwd": str(tmp_path),
                    "ok_exit_codes": [0]}
    assert type(args["args"]) is list  # the types survive the Qt signal
    assert timeout is None  # the Advanced section left empty: the task's default


# ------------------------------------------------------------------ server errors


def test_server_field_errors_show_beside_fields_and_args_at_the_top(form):
    form.set_spec(builtin("demo.answer"))
    form.set_field_errors({"seconds": "must be at least 0", "args": "must be a JSON object"})
    assert shown_error(form, "seconds") == "Must be at least 0"
    assert general_error(form) == "Arguments: must be a JSON object"
    assert editor(form, "seconds").property("invalid") is True
    # A later answer replaces the earlier one.
    form.set_field_errors({"colour": "unknown parameter"})
    assert shown_error(form, "seconds") == ""
    assert general_error(form) == "colour: unknown parameter"
    form.clear_errors()
    assert general_error(form) == "" and form.errors() == {}


def test_real_422_fields_from_the_catalog_land_beside_their_fields(form, tmp_path):
    spec = builtin("report.csv")
    form.set_spec(spec)
    editor(form, "source").setText(str(tmp_path / "missing.csv"))
    assert form.validate() == {}  # absolute: fine for the client; the server knows better
    with pytest.raises(ValidationFailed) as caught:
        CATALOG.get("report.csv").validate(form.values())
    fields = caught.value.to_body()["error"]["fields"]  # the 422 body the web service sends
    form.set_field_errors(fields)
    assert shown_error(form, "source") == "No such file"
    assert general_error(form) == ""


def test_error_text_is_red_from_the_palette(form):
    form.set_spec(builtin("files.checksum"))
    form.validate()
    colour = error_label(form, "path").palette().color(QPalette.ColorRole.WindowText)
    assert colour.red() > 150 and colour.green() < 120 and colour.blue() < 120
    base = editor(form, "path").palette().color(QPalette.ColorRole.Base)
    assert base.red() > base.green()  # the invalid editor is tinted
    form.clear_errors()
    assert editor(form, "path").palette() == form.palette()


# ------------------------------------------------------------------ running


def test_ctrl_return_in_a_field_submits(form, qtbot):
    form.set_spec(builtin("demo.answer"))
    form.show()
    qtbot.waitExposed(form)
    form.activateWindow()
    qtbot.waitUntil(form.isActiveWindow, timeout=2000)
    spin = editor(form, "seconds")
    spin.setFocus()
    type_into_spin(qtbot, spin, "0")
    with qtbot.waitSignal(form.run_requested, timeout=1000) as blocker:
        qtbot.keyClick(spin, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args == ["demo.answer", {"seconds": 0.0}, None]
    with qtbot.waitSignal(form.run_requested, timeout=1000):
        qtbot.keyClick(spin, Qt.Key.Key_Enter, Qt.KeyboardModifier.ControlModifier)
    # An invalid form is flagged instead.
    form.set_spec(builtin("files.checksum"))
    line = editor(form, "path")
    line.setFocus()
    with qtbot.assertNotEmitted(form.run_requested):
        qtbot.keyClick(line, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert shown_error(form, "path") == "Is required"
    qtbot.keyClicks(line, "/etc")
    with qtbot.waitSignal(form.run_requested, timeout=1000) as blocker:
        qtbot.keyClick(line, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args == ["files.checksum", {"path": "/etc", "algorithm": "sha256"}, None]


def test_busy_disables_running(form, qtbot):
    form.set_spec(builtin("demo.answer"))
    form.set_busy(True)
    assert form.is_busy()
    assert not form.run_button.isEnabled() and form.run_button.text() == BUSY_TEXT
    with qtbot.assertNotEmitted(form.run_requested):
        form.submit()
    form.set_busy(False)
    assert form.run_button.isEnabled() and form.run_button.text() == RUN_TEXT
    assert form.run_button.isDefault()
    with qtbot.waitSignal(form.run_requested, timeout=1000):
        form.submit()


# ------------------------------------------------------------------ paths


class Chooser:
    """Stands in for the file dialog: records what it was asked, answers `answer`."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, path_kind: str, start: str, caption: str) -> str:
        self.calls.append((path_kind, start, caption))
        return self.answer


@pytest.mark.parametrize(("task", "param", "kind"), [
    ("report.csv", "source", "file"),
    ("files.archive", "source", "directory"),
    ("files.archive", "destination", "new_file"),
    ("files.checksum", "path", "file"),
])  # fmt: skip
def test_browse_fills_the_path_through_choose_path(form, qtbot, monkeypatch, task, param,
                                                   kind, tmp_path):  # fmt: skip
    chooser = Chooser(str(tmp_path / "picked"))
    monkeypatch.setattr(form, "choose_path", chooser)
    form.set_spec(builtin(task))
    form.validate()
    button = form.findChild(QToolButton, f"browse_{param}")
    assert button.accessibleName().startswith("Browse")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert chooser.calls == [(kind, os.path.expanduser("~"), editor(form, param).accessibleName())]
    assert editor(form, param).text() == str(tmp_path / "picked")
    assert shown_error(form, param) == ""  # filling it in cleared "is required"
    # The next dialog opens where the path is; cancelling leaves the field alone.
    chooser.answer = ""
    editor(form, param).setText(str(tmp_path))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert chooser.calls[-1][1] == str(tmp_path)
    assert editor(form, param).text() == str(tmp_path)


def test_a_file_or_folder_path_offers_a_folder_from_its_menu(form, monkeypatch, tmp_path):
    chooser = Chooser(str(tmp_path))
    monkeypatch.setattr(form, "choose_path", chooser)
    form.set_spec(builtin("files.checksum"))
    button = form.findChild(QToolButton, "browse_path")
    actions = {a.text(): a for a in button.menu().actions()}
    actions["Choose a folder…"].trigger()
    assert chooser.calls[-1][0] == "directory"
    actions["Choose a file…"].trigger()
    assert chooser.calls[-1][0] == "file"
    assert form.values()["path"] == str(tmp_path)


# ------------------------------------------------------------------ rebuilding


def test_setting_another_spec_deletes_the_old_widgets(form, qtbot):
    form.set_spec(builtin("files.archive"))
    old_editor = editor(form, "source")
    old_label = error_label(form, "source")
    with qtbot.waitSignals([old_editor.destroyed, old_label.destroyed], timeout=2000):
        form.set_spec(builtin("demo.answer"))
    assert {w.objectName() for w in form.findChildren(QLineEdit)
            if w.objectName().startswith("field_")} == set()  # fmt: skip
    assert [w.objectName() for w in form.findChildren(QDoubleSpinBox)] == ["field_seconds"]
    assert form.values() == {"seconds": 5.0}
    form.set_spec(None)
    assert form.values() == {} and form.spec() is None
    qtbot.waitUntil(lambda: not form.findChildren(QDoubleSpinBox), timeout=2000)


def test_many_rebuilds_leave_one_form_behind(form, qtbot):
    for _ in range(5):
        for spec in BUILTIN_SPECS:
            form.set_spec(spec)
    last = BUILTIN_SPECS[-1]
    titles = lambda: [w for w in form.findChildren(QLabel) if w.objectName() == "task_title"]  # noqa: E731
    qtbot.waitUntil(lambda: len(titles()) == 1, timeout=2000)
    names = sorted(w.objectName() for w in form.findChildren(QWidget)
                   if w.objectName().startswith("field_"))  # fmt: skip
    assert names == sorted(f"field_{p['name']}" for p in last["params"])


# ------------------------------------------------------------------ advanced: the time limit

LIMITED = {**builtin("demo.answer"), "timeout": 30.0, "max_timeout": 600.0}


def advanced_toggle(form: TaskForm) -> QToolButton:
    return form.findChild(QToolButton, "advanced_toggle")


def time_limit(form: TaskForm) -> QLineEdit:
    return form.findChild(QLineEdit, "time_limit")


def time_limit_error(form: TaskForm) -> str:
    label = form.findChild(QLabel, "error_time_limit")
    return label.text() if label.isVisibleTo(form) else ""


def test_advanced_is_collapsed_by_default_and_stays_as_the_user_left_it(form, qtbot):
    form.set_spec(LIMITED)
    form.show()
    toggle = advanced_toggle(form)
    assert toggle.text() == "Advanced" and not toggle.isChecked()
    assert not form.advanced_expanded() and not time_limit(form).isVisible()
    with qtbot.waitSignal(form.advanced_toggled, timeout=1000) as blocker:
        qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    assert blocker.args == [True]
    assert time_limit(form).isVisible() and toggle.arrowType() == Qt.ArrowType.DownArrow
    form.set_spec(builtin("files.checksum"))  # another task: still open
    assert form.advanced_expanded() and time_limit(form).isVisible()
    with qtbot.assertNotEmitted(form.advanced_toggled):  # set by the program: no signal
        form.set_advanced_expanded(False)
    assert not time_limit(form).isVisibleTo(form) and not advanced_toggle(form).isChecked()


def test_the_placeholder_says_the_tasks_default_from_the_catalog(form):
    form.set_spec(LIMITED)
    assert time_limit(form).placeholderText() == "default: 30 s"
    assert "At most 10 min" in time_limit(form).toolTip()
    form.set_spec(builtin("demo.answer"))  # a real entry: no default limit
    assert builtin("demo.answer")["timeout"] is None
    assert time_limit(form).placeholderText() == "no limit"
    assert time_limit(form).accessibleName() == "Time limit"
    assert form.time_limit() is None


def test_a_time_limit_typed_in_reaches_run_requested(form, qtbot):
    form.set_spec(LIMITED)
    form.set_advanced_expanded(True)
    fill_line(qtbot, time_limit(form), "12.5")
    with qtbot.waitSignal(form.run_requested, timeout=1000) as blocker:
        qtbot.mouseClick(form.run_button, Qt.MouseButton.LeftButton)
    name, args, timeout = blocker.args
    assert (name, args, timeout) == ("demo.answer", {"seconds": 5.0}, 12.5)
    assert type(timeout) is float
    assert "timeout" not in args  # the time limit is no argument of the task
    fill_line(qtbot, time_limit(form), "")
    with qtbot.waitSignal(form.run_requested, timeout=1000) as blocker:
        form.submit()
    assert blocker.args[2] is None


def test_the_time_limit_is_checked_beside_the_field(form, qtbot):
    form.set_spec(LIMITED)
    form.show()
    line = time_limit(form)
    qtbot.keyClicks(line, "a1b")  # letters never make a number: refused while typing
    assert line.text() == "1"
    for text, problem in (("0", "must be a positive number of seconds"),
                          ("601", "must be at most 10 min for this task"),
                          (".", "must be a number of seconds")):  # fmt: skip
        line.setText(text)
        form.set_advanced_expanded(False)
        with qtbot.assertNotEmitted(form.run_requested):
            form.submit()
        assert form.errors() == {"timeout": problem}
        assert time_limit_error(form) == problem[:1].upper() + problem[1:]
        assert form.advanced_expanded() and line.isVisible()  # opened to show the error
        assert line.property("invalid") is True
    qtbot.keyClick(line, Qt.Key.Key_Backspace)  # editing clears the error
    assert time_limit_error(form) == "" and line.property("invalid") is False
    line.setText("600")
    assert form.validate() == {} and form.time_limit() == 600.0


def test_the_servers_422_for_the_time_limit_lands_beside_it(form):
    spec = CATALOG.get("demo.answer")
    with pytest.raises(ValidationFailed) as caught:
        spec.check_timeout(spec.max_timeout * 2)  # what the web service runs on a submit
    fields = caught.value.to_body()["error"]["fields"]
    assert set(fields) == {"timeout"}
    form.set_spec(builtin("demo.answer"))
    form.set_field_errors(fields)
    assert time_limit_error(form) == "Must be at most 604800 s for this task"
    assert general_error(form) == "" and form.advanced_expanded()


def test_a_tasks_own_timeout_parameter_keeps_its_errors(form):
    form.set_spec({"name": "t", "title": "T", "description": "", "params": [
        {"name": "timeout", "type": "integer", "title": "Timeout", "description": "",
         "required": False, "default": 1},
    ]})  # fmt: skip
    assert isinstance(editor(form, "timeout"), QSpinBox) and time_limit(form) is not None
    form.set_field_errors({"timeout": "must be at least 0"})
    assert shown_error(form, "timeout") == "Must be at least 0"
    assert time_limit_error(form) == ""
    assert form.values() == {"timeout": 1}


def test_set_time_limit_shows_only_what_differs_from_the_default(form):
    form.set_spec(LIMITED)
    form.set_time_limit(30.0)  # the task's default: the field stays empty
    assert time_limit(form).text() == "" and not form.advanced_expanded()
    assert form.time_limit() is None
    form.set_time_limit(90)
    assert time_limit(form).text() == "90" and form.advanced_expanded()
    assert form.time_limit() == 90.0
    form.set_time_limit(None)
    assert time_limit(form).text() == ""
