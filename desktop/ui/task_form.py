"""The form generated from a task's declared parameters: one editor per parameter, client-side
checks before submitting, and the server's 422 field errors shown beside the fields.

The input is one catalog entry as `GET /api/catalog` returns it:
`{"name", "title", "description", "params": [...], "timeout", "max_timeout", ...}`, each
parameter as `Param.to_json()`. Below the parameters, a collapsible "Advanced" section holds
how the task runs rather than what it does: the time limit of each attempt (empty: the
task's default), checked against the task's `max_timeout` like the server does.
Values are checked with `services.core.params.Param.validate`, the very code the web service
runs, so the form and the server say the same thing about the same value; what a path
points at is checked with `path_problem`, as the server checks it at submit, shortly after
the user stops typing (a folder where a file is wanted, an existing destination while the
task's Overwrite is off; a path that does not exist yet is left to the server).

Empty means "not given": an optional parameter whose default is null shows empty, and such
an empty field (or an emptied path) is left out of `values()` so the server fills in the
default; emptying a text field whose default is a string sends "". A spin box shows
"not given" as blank (its minimum is a sentinel one step below the real bound), a check box
as partially checked, a combo box as a blank first item.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QRegularExpression, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QPalette,
    QRegularExpressionValidator,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QStyleOptionFrame,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from services.core.params import (
    OVERWRITE_PARAM,
    REQUIRED,
    Param,
    ParamType,
    PathKind,
    parent_folder,
    path_problem,
)
from services.core.retry import format_seconds

PLACEHOLDER_TEXT = "Choose a task on the left"
RUN_TEXT = "Run"
BUSY_TEXT = "Submitting…"

ADVANCED_TEXT = "Advanced"
TIME_LIMIT = "timeout"  # the submit's key for the time limit, and the key of its 422 error

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # QSpinBox holds a C int
NUMBER_LIMIT = 1e9  # bounds of a number spin box when the parameter declares none
DECIMALS = 3

PATH_MIN_CHARS = 28  # a path field shows at least this many average characters
LIVE_CHECK_MS = 250  # a path is looked at this long after the user stops typing
SETTINGS_GROUP = "form"  # QSettings: form/<task name> holds the task's last values (JSON)

# The error red, readable on light and on dark palettes.
_RED_ON_LIGHT = "#c62828"
_RED_ON_DARK = "#ff6b6b"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a field left empty: "not given"


def error_color(palette: QPalette) -> QColor:
    """The red used for errors, chosen for the palette's background (light or dark)."""
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return QColor(_RED_ON_DARK if dark else _RED_ON_LIGHT)


def _blend(base: QColor, tint: QColor, amount: float) -> QColor:
    """`base` moved `amount` (0..1) of the way towards `tint`."""
    return QColor.fromRgbF(*(b + (t - b) * amount for b, t in
                             zip(base.getRgbF()[:3], tint.getRgbF()[:3], strict=True)))


def param_from_json(spec: dict[str, Any]) -> Param | None:
    """The core `Param` a catalog entry's parameter describes, or None if it is not one we
    know (a newer server's type): such a field is edited as text and left unchecked."""
    try:
        return Param(
            name=spec["name"],
            type=ParamType(spec["type"]),
            title=spec.get("title", ""),
            description=spec.get("description", ""),
            default=REQUIRED if spec.get("required", "default" not in spec)
            else spec.get("default"),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
            choices=tuple(spec["choices"]) if spec.get("choices") is not None else None,
            path_kind=PathKind(spec["path_kind"]) if spec.get("path_kind") else None,
            pattern=spec.get("pattern"),
        )
    except (KeyError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------ one field per parameter


class _Field:
    """One parameter's editor, with its label and error label.

    Subclasses build the editor and read and write its value; `read()` returns MISSING for an
    empty field and raises ValueError for text that is not a value at all.
    """

    def __init__(self, spec: dict[str, Any], param: Param | None, parent: QWidget) -> None:
        self.spec = spec
        self.param = param
        self.name: str = spec["name"]
        self.title: str = spec.get("title") or self.name
        self.description: str = spec.get("description", "")
        self.required: bool = bool(spec.get("required", "default" not in spec))
        self.default: Any = None if self.required else spec.get("default")
        self.editor = self._build(parent)
        self.widget: QWidget = self._wrap(self.editor, parent)  # what the form row holds
        self.editor.setToolTip(self.description)
        self.editor.setAccessibleName(self.title)
        self.editor.setAccessibleDescription(self.description)
        self.label = QLabel(self._label_text(), parent)
        self.label.setBuddy(self.editor)
        self.label.setToolTip(self.description)
        self.error = QLabel(parent)
        self.error.setWordWrap(True)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setAccessibleName(f"{self.title}: error")
        # Word-wrapped labels do not grow by themselves; without this the text wraps early.
        self.error.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.error.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.error.setObjectName(f"error_{self.name}")
        self.editor.setObjectName(f"field_{self.name}")
        self.message = ""
        self.row_layout: QFormLayout | None = None  # the form layout holding its rows

    def _label_text(self) -> str:
        title = self.title.replace("&", "&&")  # a buddy label reads "&" as a mnemonic
        return f"{title} *:" if self.required else f"{title}:"

    def _build(self, parent: QWidget) -> QWidget:
        raise NotImplementedError

    def _wrap(self, editor: QWidget, parent: QWidget) -> QWidget:
        return editor

    def connect_changed(self, slot: Callable[[], None]) -> None:
        """Call `slot` whenever the user (or the program) changes the value."""
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def write(self, value: Any) -> None:
        """Show `value`; None or MISSING shows the field empty."""
        raise NotImplementedError

    def reset(self) -> None:
        self.write(MISSING if self.required else self.default)

    def problem(self) -> str | None:
        """What is wrong with the current input, checked as the server would; or None."""
        try:
            value = self.read()
        except ValueError as exc:
            return str(exc)
        if value is MISSING:
            return "is required" if self.required else None
        if self.param is None:
            return None
        try:
            self.param.validate(value)
        except ValueError as exc:
            return str(exc)
        except re.error:  # a pattern Python cannot compile: the server's problem, not ours
            return None
        return None


class _TextField(_Field):
    """A string: a line edit; with a pattern, a validator that refuses impossible input."""

    editor: QLineEdit

    def _build(self, parent: QWidget) -> QWidget:
        line = QLineEdit(parent)
        line.setPlaceholderText(self.description)
        line.setClearButtonEnabled(True)
        maximum = self.spec.get("maximum")
        if self.spec["type"] == ParamType.STRING and maximum is not None:
            line.setMaxLength(max(1, min(int(maximum), 32767)))
        pattern = self.spec.get("pattern")
        if pattern:
            regex = QRegularExpression(pattern)
            if regex.isValid():
                line.setValidator(QRegularExpressionValidator(regex, line))
        return line

    def connect_changed(self, slot: Callable[[], None]) -> None:
        self.editor.textChanged.connect(slot)

    def read(self) -> Any:
        text = self.editor.text()
        if text:
            return text
        # An empty string is a value only where the parameter has a string default.
        return MISSING if self.required or self.default is None else ""

    def write(self, value: Any) -> None:
        self.editor.setText("" if value is None or value is MISSING else str(value))


class PathLineEdit(QLineEdit):
    """A line edit for a path: a long path is shown elided in the middle while the field is
    not being edited (the full path is in the tooltip), and a file or folder dropped on it
    (from a file manager) sets it.

    Signals:
        path_dropped(str): a local file or folder was dropped and is now the text.
    """

    path_dropped = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._help = ""
        self.setAcceptDrops(True)
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * PATH_MIN_CHARS)
        self.textChanged.connect(self._update_tooltip)

    def set_help(self, text: str) -> None:
        """The description shown in the tooltip below the full path."""
        self._help = text
        self._update_tooltip()

    def _update_tooltip(self) -> None:
        text = self.text()
        self.setToolTip(f"{text}\n\n{self._help}".strip() if text else self._help)

    def _text_room(self) -> int:
        option = QStyleOptionFrame()
        self.initStyleOption(option)
        rect = self.style().subElementRect(QStyle.SubElement.SE_LineEditContents, option, self)
        margins = self.textMargins()
        room = rect.width() - margins.left() - margins.right() - 4
        if self.isClearButtonEnabled() and self.text():
            room -= rect.height()  # the clear button sits inside, on the right
        return max(0, room)

    def displayed_text(self) -> str:
        """What the field shows: the text, or while not edited, it elided in the middle."""
        text = self.text()
        if self.hasFocus() or not text:
            return text
        return self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle,
                                             self._text_room())  # fmt: skip

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        shown = self.displayed_text()
        if shown == self.text():
            super().paintEvent(event)
            return
        # The frame as the style draws it, then the elided text where the text goes.
        painter = QPainter(self)
        option = QStyleOptionFrame()
        self.initStyleOption(option)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelLineEdit, option,
                                   painter, self)  # fmt: skip
        rect = self.style().subElementRect(QStyle.SubElement.SE_LineEditContents, option, self)
        margins = self.textMargins()
        rect = rect.adjusted(margins.left() + 2, margins.top(), -margins.right(),
                             -margins.bottom())  # fmt: skip
        painter.setPen(self.palette().color(QPalette.ColorRole.Text))
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         shown)  # fmt: skip
        painter.end()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if dropped_path(event) is not None:
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        if dropped_path(event) is not None:
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt's name)
        path = dropped_path(event)
        if path is None:
            super().dropEvent(event)
            return
        event.acceptProposedAction()
        self.setText(path)
        self.path_dropped.emit(path)


def dropped_path(event: QDropEvent | QDragEnterEvent) -> str | None:
    """The first local file or folder a drag carries, or None."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile() and url.toLocalFile():
            return url.toLocalFile()
    return None


class _PathField(_TextField):
    """A path: a line edit and a "Browse…" button asking the form's `choose_path`.

    Besides the server's checks on the text, it looks at what the path points at, as the
    server will (`services.core.params.path_problem`): a folder where a file is wanted, a
    file where a folder is, an existing destination while the task's Overwrite is off. A
    path that does not exist yet is left to the server. On a remote server (`local` False)
    the paths are the server's, not this computer's: only the server checks them."""

    editor: PathLineEdit
    local = True  # whether the paths are this computer's (set by the form)

    def __init__(self, spec: dict[str, Any], param: Param | None, parent: QWidget,
                 browse: Callable[[_PathField, str], None]) -> None:  # fmt: skip
        self._browse = browse
        self.overwrite_of: Callable[[], bool | None] = lambda: None  # set by the form
        super().__init__(spec, param, parent)
        self.editor.set_help(self.description)

    def _build(self, parent: QWidget) -> QWidget:
        line = PathLineEdit(parent)
        line.setPlaceholderText(self.description)
        line.setClearButtonEnabled(True)
        return line

    @property
    def path_kind(self) -> str:
        return self.spec.get("path_kind") or PathKind.ANY.value

    def _wrap(self, editor: QWidget, parent: QWidget) -> QWidget:
        box = QWidget(parent)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        row.addWidget(editor, 1)
        self.browse_button = button = QToolButton(box)
        button.setText("Browse…")
        button.setAccessibleName(f"Browse for {self.title}")
        button.setToolTip(f"Choose {self.title.lower()} in a dialog")
        button.setObjectName(f"browse_{self.name}")
        kind = self.path_kind
        if kind == PathKind.ANY:
            # One dialog cannot pick "a file or a folder": the button picks a file, its menu
            # either.
            menu = QMenu(button)
            menu.addAction("Choose a file…", lambda: self._browse(self, PathKind.FILE.value))
            menu.addAction("Choose a folder…",
                           lambda: self._browse(self, PathKind.DIRECTORY.value))  # fmt: skip
            button.setMenu(menu)
            button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
            button.clicked.connect(lambda: self._browse(self, PathKind.FILE.value))
        else:
            button.clicked.connect(lambda: self._browse(self, kind))
        row.addWidget(button)
        return box

    def read(self) -> Any:
        text = self.editor.text().strip()  # pasted paths often carry a stray space
        # An empty path is never valid: leaving it out lets the server use the default.
        return text or MISSING

    def problem(self) -> str | None:
        found = super().problem()
        if found is not None:
            return found
        value = self.read()
        if value is MISSING:
            return None
        expanded = os.path.expanduser(value)
        if not (os.path.isabs(expanded) or re.match(r"[A-Za-z]:[\\/]", expanded)):
            return "must be an absolute path"
        return self.kind_problem()

    def kind_problem(self) -> str | None:
        """What the path points at that will not do (see the class); None if fine or if
        there is no absolute path to look at."""
        try:
            value = self.read()
        except ValueError:
            return None
        if value is MISSING or not self.local:
            return None
        path = os.path.expanduser(value)
        if not os.path.isabs(path):
            return None
        return path_problem(self.path_kind, exists=os.path.lexists(path),
                            is_dir=os.path.isdir(path),
                            parent_is_dir=os.path.isdir(parent_folder(path) or "/"),
                            overwrite=self.overwrite_of(), missing_ok=True)  # fmt: skip


class _ListField(_TextField):
    """A list of strings typed as shell-like words: `a "b c" d` is ["a", "b c", "d"]."""

    def _build(self, parent: QWidget) -> QWidget:
        line = super()._build(parent)
        self.description = (self.description + "\n" if self.description else "") + (
            "Separate items with spaces; quote an item that contains spaces.")  # fmt: skip
        return line

    def read(self) -> Any:
        text = self.editor.text()
        try:
            items = shlex.split(text)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ValueError(str(exc).lower()) from None
        if items or text.strip():
            return items
        return MISSING if self.required or self.default is None else []

    def write(self, value: Any) -> None:
        if value is None or value is MISSING:
            self.editor.setText("")
        elif isinstance(value, list | tuple):
            self.editor.setText(shlex.join(str(v) for v in value))
        else:
            self.editor.setText(str(value))


class _IntListField(_ListField):
    """A list of integers (exit codes, say) typed as `0 1` or `0, 1`."""

    def _build(self, parent: QWidget) -> QWidget:
        line = _TextField._build(self, parent)
        self.description = (self.description + "\n" if self.description else "") + (
            "Separate the numbers with spaces or commas.")  # fmt: skip
        return line

    def read(self) -> Any:
        text = self.editor.text()
        parts = [p for p in text.replace(",", " ").split() if p]
        try:
            items = [int(p) for p in parts]
        except ValueError:
            raise ValueError("must be whole numbers separated by spaces or commas") from None
        if items:
            return items
        return MISSING if self.required or self.default is None else []

    def write(self, value: Any) -> None:
        if isinstance(value, list | tuple):
            self.editor.setText(" ".join(str(v) for v in value))
        else:
            super().write(value)


class _SpinField(_Field):
    """A number in a spin box. A parameter that may be left empty (required without a
    default, or optional with a null default) gets a sentinel just below its minimum, shown
    blank. Text typed beyond the bounds is read as typed, so the check can name the bound."""

    editor: QSpinBox | QDoubleSpinBox
    nullable: bool

    def _bounds(self) -> tuple[float, float]:
        raise NotImplementedError

    def _setup(self, spin: QSpinBox | QDoubleSpinBox, step: float) -> None:
        low, high = self._bounds()
        self.nullable = self.required or self.default is None
        if self.nullable:
            low -= step
            spin.setSpecialValueText(" ")  # blank, yet non-empty: Qt ignores ""
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setAccelerated(True)
        spin.setCorrectionMode(QAbstractSpinBox.CorrectionMode.CorrectToNearestValue)
        spin.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def connect_changed(self, slot: Callable[[], None]) -> None:
        self.editor.textChanged.connect(slot)

    def _parse(self, text: str) -> float:
        raise NotImplementedError

    def read(self) -> Any:
        spin = self.editor
        if self.nullable and spin.value() == spin.minimum() and spin.hasAcceptableInput():
            return MISSING
        text = spin.cleanText().strip()
        if not text:
            return MISSING
        if spin.hasAcceptableInput():
            return self._convert(spin.value())
        return self._convert(self._parse(text))

    def _convert(self, value: float) -> Any:
        raise NotImplementedError

    def write(self, value: Any) -> None:
        spin = self.editor
        if value is None or value is MISSING:
            if self.nullable:
                spin.setValue(spin.minimum())
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = self._parse(str(value))
            except ValueError:
                return
        spin.setValue(value)


class _IntegerField(_SpinField):
    editor: QSpinBox

    def _bounds(self) -> tuple[float, float]:
        low, high = self.spec.get("minimum"), self.spec.get("maximum")
        low = INT_MIN + 1 if low is None else max(INT_MIN + 1, math.ceil(low))
        high = INT_MAX if high is None else min(INT_MAX, math.floor(high))
        return low, max(low, high)

    def _build(self, parent: QWidget) -> QWidget:
        spin = QSpinBox(parent)
        self.editor = spin
        self._setup(spin, 1)
        return spin

    def _parse(self, text: str) -> float:
        value, ok = self.editor.locale().toLongLong(text)
        if not ok:
            try:
                return int(text)
            except ValueError:
                raise ValueError("must be an integer") from None
        return value

    def _convert(self, value: float) -> Any:
        return int(value)


class _CompactDoubleSpinBox(QDoubleSpinBox):
    """A double spin box that shows 5 rather than 5.000 (up to `decimals` when needed)."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt's name)
        text = self.locale().toString(value, "f", self.decimals())
        point = self.locale().decimalPoint()
        if point in text:
            text = text.rstrip("0").removesuffix(point)
        return text


class _NumberField(_SpinField):
    editor: QDoubleSpinBox

    def _bounds(self) -> tuple[float, float]:
        low, high = self.spec.get("minimum"), self.spec.get("maximum")
        low = -NUMBER_LIMIT if low is None else float(low)
        high = NUMBER_LIMIT if high is None else float(high)
        return low, max(low, high)

    def _step(self) -> float:
        low, high = self._bounds()
        span = high - low
        if span >= 10 or span <= 0:
            return 1.0
        # A tenth of the span's order of magnitude: 0..1 steps by 0.1, 0..0.05 by 0.001.
        return max(10.0 ** -DECIMALS, 10.0 ** (math.floor(math.log10(span)) - 1))

    def _build(self, parent: QWidget) -> QWidget:
        spin = _CompactDoubleSpinBox(parent)
        self.editor = spin
        spin.setDecimals(DECIMALS)
        self._setup(spin, self._step())
        return spin

    def _parse(self, text: str) -> float:
        value, ok = self.editor.locale().toDouble(text)
        if not ok:
            try:
                value = float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        return value

    def _convert(self, value: float) -> Any:
        return float(value)


class _BoolField(_Field):
    """A check box; tri-state (partially checked = not given) when the default is null."""

    editor: QCheckBox

    def _build(self, parent: QWidget) -> QWidget:
        box = QCheckBox(parent)
        box.setTristate(not self.required and self.default is None)
        return box

    def connect_changed(self, slot: Callable[[], None]) -> None:
        self.editor.checkStateChanged.connect(slot)

    def read(self) -> Any:
        state = self.editor.checkState()
        if state == Qt.CheckState.PartiallyChecked:
            return MISSING
        return state == Qt.CheckState.Checked

    def write(self, value: Any) -> None:
        box = self.editor
        if value is None or value is MISSING:
            box.setCheckState(Qt.CheckState.PartiallyChecked if box.isTristate()
                              else Qt.CheckState.Unchecked)  # fmt: skip
        else:
            box.setChecked(bool(value))


class _ChoiceField(_Field):
    """A combo box of the choices; a blank first item when it may be left empty."""

    editor: QComboBox

    def _build(self, parent: QWidget) -> QWidget:
        combo = QComboBox(parent)
        if not self.required and self.default is None:
            combo.addItem("", None)
        for choice in self.spec.get("choices") or ():
            combo.addItem(str(choice), choice)
        combo.setPlaceholderText("Choose…")  # shown while nothing is chosen (index -1)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        return combo

    def connect_changed(self, slot: Callable[[], None]) -> None:
        self.editor.currentIndexChanged.connect(slot)

    def read(self) -> Any:
        data = self.editor.currentData()
        return MISSING if data is None else data

    def write(self, value: Any) -> None:
        combo = self.editor
        if value is None or value is MISSING:
            blank = combo.count() > 0 and combo.itemData(0) is None
            combo.setCurrentIndex(0 if blank else -1)
            return
        index = combo.findData(value)
        if index >= 0:  # a value that is no longer a choice keeps the current one
            combo.setCurrentIndex(index)


class _TimeLimitField(_Field):
    """The time limit of each attempt, in seconds: a line edit whose placeholder says the
    task's default ("default: 30 s", "no limit"); empty means that default. Checked as the
    server checks a submit's `timeout`: a positive number, at most the task's maximum."""

    editor: QLineEdit

    def __init__(self, task_spec: dict[str, Any], parent: QWidget) -> None:
        default, most = task_spec.get("timeout"), task_spec.get("max_timeout")
        self.task_default: float | None = (float(default) if _is_number(default)
                                           and default > 0 else None)  # fmt: skip
        self.maximum: float | None = float(most) if _is_number(most) and most > 0 else None
        description = "How long each attempt may run before it is stopped, in seconds. " + (
            f"Empty: the task's default, {format_seconds(self.task_default)}."
            if self.task_default else "Empty: no limit.")  # fmt: skip
        if self.maximum:
            description += f" At most {format_seconds(self.maximum)}."
        spec = {"name": TIME_LIMIT, "type": ParamType.NUMBER.value, "title": "Time limit",
                "description": description, "required": False, "default": None}  # fmt: skip
        super().__init__(spec, None, parent)
        # Not "field_timeout": that is the name a task's own "timeout" parameter would get.
        self.editor.setObjectName("time_limit")
        self.error.setObjectName("error_time_limit")

    def _build(self, parent: QWidget) -> QWidget:
        line = QLineEdit(parent)
        line.setPlaceholderText(f"default: {format_seconds(self.task_default)}"
                                if self.task_default else "no limit")  # fmt: skip
        line.setClearButtonEnabled(True)
        line.setValidator(QRegularExpressionValidator(
            QRegularExpression(r"[0-9]*([.,][0-9]*)?"), line))  # fmt: skip
        return line

    def _wrap(self, editor: QWidget, parent: QWidget) -> QWidget:
        box = QWidget(parent)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        row.addWidget(editor, 1)
        unit = QLabel("seconds", box)
        unit.setBuddy(editor)
        row.addWidget(unit)
        return box

    def connect_changed(self, slot: Callable[[], None]) -> None:
        self.editor.textChanged.connect(slot)

    def read(self) -> Any:
        text = self.editor.text().strip()
        if not text:
            return MISSING
        try:
            return float(text.replace(",", "."))
        except ValueError:
            raise ValueError("must be a number of seconds") from None

    def write(self, value: Any) -> None:
        if not _is_number(value):
            self.editor.setText("")
            return
        self.editor.setText(f"{float(value):.3f}".rstrip("0").rstrip("."))

    def problem(self) -> str | None:
        try:
            value = self.read()
        except ValueError as exc:
            return str(exc)
        if value is MISSING:
            return None
        if not (math.isfinite(value) and value > 0):
            return "must be a positive number of seconds"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {format_seconds(self.maximum)} for this task"
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_FIELD_TYPES: dict[str, type[_Field]] = {
    ParamType.STRING.value: _TextField,
    ParamType.INTEGER.value: _IntegerField,
    ParamType.NUMBER.value: _NumberField,
    ParamType.BOOLEAN.value: _BoolField,
    ParamType.CHOICE.value: _ChoiceField,
    ParamType.STRING_LIST.value: _ListField,
    ParamType.INTEGER_LIST.value: _IntListField,
}


# ------------------------------------------------------------------ the form


class TaskForm(QWidget):
    """The form for one task: its title, description, one row per parameter, and the
    collapsible Advanced section (the time limit).

    Signals:
        run_requested(name, args, timeout): the user asked to run the task `name` with
            `args` (checked client-side already; JSON-able values, optional empty fields
            left out) and `timeout`, each attempt's time limit in seconds (a float), or
            None for the task's default.
        advanced_toggled(bool): the user opened (True) or closed the Advanced section.

    With `settings`, the last values of each task's form are remembered (under
    "form/<task name>"): kept when the user runs the task or moves to another one, and
    shown again the next time that task's form opens, in this session or a later one.
    """

    run_requested = Signal(str, dict, object)
    advanced_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None
                 ) -> None:  # fmt: skip
        super().__init__(parent)
        self.setObjectName("task_form")
        self._settings = settings
        # Path fields waiting to be looked at once the user pauses typing.
        self._live_pending: set[str] = set()
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_CHECK_MS)
        self._live_timer.timeout.connect(self._on_live_timer_timeout)
        self._spec: dict[str, Any] | None = None
        self._fields: dict[str, _Field] = {}
        self._time_limit: _TimeLimitField | None = None
        self._advanced_open = False
        self._advanced_button: QToolButton | None = None
        self._advanced: QWidget | None = None
        self._busy = False
        self._paths_local = True  # see set_paths_local
        self._general_error: QLabel | None = None

        self._stack = QStackedWidget(self)
        self._placeholder = QLabel(PLACEHOLDER_TEXT, self)
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._placeholder.setEnabled(False)  # drawn in the palette's muted text colour
        self._stack.addWidget(self._placeholder)

        page = QWidget(self)
        page_layout = QVBoxLayout(page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        self._scroll = QScrollArea(page)
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        page_layout.addWidget(self._scroll, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.run_button = QPushButton(RUN_TEXT, page)
        self.run_button.setObjectName("run_button")
        self.run_button.setDefault(True)
        self.run_button.setAccessibleName("Run task")
        self.run_button.setToolTip("Run the task with these arguments (Ctrl+Enter)")
        self.run_button.clicked.connect(self.submit)
        buttons.addWidget(self.run_button)
        page_layout.addLayout(buttons)
        self._stack.addWidget(page)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._stack)

        # Ctrl+Return, and Ctrl+Enter on the keypad, from anywhere inside the form.
        self.run_shortcuts: list[QShortcut] = []
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            shortcut = QShortcut(QKeySequence(Qt.KeyboardModifier.ControlModifier | key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(self.submit)
            self.run_shortcuts.append(shortcut)

        self.set_spec(None)

    # ---------------------------------------------------------------- building

    def spec(self) -> dict[str, Any] | None:
        """The catalog entry shown, or None."""
        return self._spec

    def set_spec(self, spec: dict[str, Any] | None) -> None:
        """Show the form for `spec` (a catalog entry), or the placeholder for None.

        The previous form's widgets are deleted (later, from the event loop); its values
        are remembered first, and the new task's remembered values are shown."""
        self.remember_values()
        self._live_timer.stop()
        self._live_pending.clear()
        old = self._scroll.takeWidget()
        if old is not None:
            old.deleteLater()
        self._fields = {}
        self._time_limit = None
        self._advanced_button = self._advanced = None
        self._general_error = None
        self._spec = spec
        if spec is None:
            self._stack.setCurrentIndex(0)
            return
        content = QWidget()
        content.setObjectName("task_form_content")
        column = QVBoxLayout(content)
        title = QLabel(spec.get("title") or spec.get("name", ""), content)
        title.setObjectName("task_title")
        title.setTextFormat(Qt.TextFormat.PlainText)
        title.setWordWrap(True)
        font = title.font()
        font.setBold(True)
        if font.pointSizeF() > 0:
            font.setPointSizeF(font.pointSizeF() * 1.25)
        title.setFont(font)
        title.setAccessibleName("Task")
        column.addWidget(title)
        description = QLabel(spec.get("description", ""), content)
        description.setObjectName("task_description")
        description.setTextFormat(Qt.TextFormat.PlainText)
        description.setWordWrap(True)
        description.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        description.setVisible(bool(spec.get("description")))
        column.addWidget(description)
        self._general_error = general = QLabel(content)
        general.setObjectName("general_error")
        general.setWordWrap(True)
        general.setTextFormat(Qt.TextFormat.PlainText)
        general.setAccessibleName("Form error")
        general.hide()
        column.addWidget(general)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        for param_spec in spec.get("params", []):
            field = self._make_field(param_spec, content)
            self._fields[field.name] = field
            self._add_rows(form, field)
        column.addLayout(form)
        self._add_advanced(spec, content, column)
        column.addStretch(1)
        self._wire_path_checks()
        self._restore_values()
        self._paint_errors()
        self._scroll.setWidget(content)
        self._stack.setCurrentIndex(1)

    def _add_rows(self, form: QFormLayout, field: _Field) -> None:
        """The field's row and, below it, its error row (hidden while there is no error)."""
        form.addRow(field.label, field.widget)
        form.addRow(None, field.error)
        form.setRowVisible(field.error, False)
        field.row_layout = form
        field.connect_changed(lambda *_args, f=field: self._clear_field_error(f))

    def _wire_path_checks(self) -> None:
        """Look at each path shortly after it changes (and at the destinations when the
        task's Overwrite switch changes), and say at once what will not do."""
        switch = self._fields.get(OVERWRITE_PARAM)
        overwrite: Callable[[], bool | None] = lambda: None  # noqa: E731
        if isinstance(switch, _BoolField):
            def overwrite() -> bool | None:
                value = switch.read()
                return value if isinstance(value, bool) else None
        paths = [f for f in self._fields.values() if isinstance(f, _PathField)]
        for field in paths:
            field.overwrite_of = overwrite
            field.connect_changed(lambda *_a, f=field: self._schedule_live_check(f))
        if isinstance(switch, _BoolField):
            for field in paths:
                if field.path_kind == PathKind.NEW_FILE:
                    switch.connect_changed(lambda *_a, f=field: self._schedule_live_check(f))

    def _schedule_live_check(self, field: _PathField) -> None:
        self._live_pending.add(field.name)
        self._live_timer.start()

    def _on_live_timer_timeout(self) -> None:
        self.check_paths_now()

    def check_paths_now(self) -> None:
        """Look at the paths changed since the last look now (the timer does it by itself
        shortly after the user stops typing)."""
        self._live_timer.stop()
        pending, self._live_pending = self._live_pending, set()
        for name in pending:
            field = self._fields.get(name)
            if isinstance(field, _PathField):
                self._show_field_error(field, field.kind_problem() or "")

    def fill_first_path(self, path: str) -> bool:
        """Put `path` in the form's first path field (a file dropped on the task's catalog
        entry); False if the task has none."""
        for field in self._fields.values():
            if isinstance(field, _PathField):
                field.editor.setText(path)
                self.check_paths_now()
                return True
        return False

    # ---------------------------------------------------------------- remembering

    def _settings_key(self, name: str) -> str:
        return f"{SETTINGS_GROUP}/{name}"

    def remember_values(self) -> None:
        """Keep the values shown for the task, to show them again next time."""
        if self._settings is None or self._spec is None or not self._fields:
            return
        self._settings.setValue(self._settings_key(self._spec["name"]),
                                json.dumps(self.values(), ensure_ascii=False))  # fmt: skip

    def _restore_values(self) -> None:
        if self._settings is None or self._spec is None:
            return
        text = self._settings.value(self._settings_key(self._spec["name"]))
        if not isinstance(text, str) or not text:
            return
        try:
            values = json.loads(text)
        except ValueError:
            return
        if isinstance(values, dict):
            for name, value in values.items():
                field = self._fields.get(name)
                if field is not None and value is not None:
                    field.write(value)
            self.clear_errors()

    def _add_advanced(self, spec: dict[str, Any], content: QWidget, column: QVBoxLayout) -> None:
        """The Advanced toggle and the section it opens: the time limit."""
        self._advanced_button = button = QToolButton(content)
        button.setObjectName("advanced_toggle")
        button.setText(ADVANCED_TEXT)
        button.setAccessibleName("Advanced settings")
        button.setToolTip("How the task runs: its time limit")
        button.setCheckable(True)
        button.setAutoRaise(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        column.addWidget(button)
        self._advanced = section = QWidget(content)
        section.setObjectName("advanced_section")
        form = QFormLayout(section)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self._time_limit = _TimeLimitField(spec, section)
        self._add_rows(form, self._time_limit)
        column.addWidget(section)
        self._show_advanced(self._advanced_open)
        button.toggled.connect(self._on_advanced_toggle_toggled)

    def _show_advanced(self, open_: bool) -> None:
        button, section = self._advanced_button, self._advanced
        if button is None or section is None:
            return
        button.setChecked(open_)
        button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        section.setVisible(open_)

    def _on_advanced_toggle_toggled(self, checked: bool) -> None:
        if checked == self._advanced_open:
            return
        self._advanced_open = checked
        self._show_advanced(checked)
        self.advanced_toggled.emit(checked)

    def advanced_expanded(self) -> bool:
        """Whether the Advanced section is open (it stays so from one task to the next)."""
        return self._advanced_open

    def set_advanced_expanded(self, expanded: bool) -> None:
        """Open or close the Advanced section (e.g. as the window remembers it)."""
        self._advanced_open = bool(expanded)
        self._show_advanced(self._advanced_open)

    def _make_field(self, spec: dict[str, Any], parent: QWidget) -> _Field:
        param = param_from_json(spec)
        field: _Field
        if spec.get("type") == ParamType.PATH.value:
            field = _PathField(spec, param, parent, self._on_browse_clicked)
            field.local = self._paths_local
        else:
            field = _FIELD_TYPES.get(spec.get("type", ""), _TextField)(spec, param, parent)
        field.reset()
        return field

    # ---------------------------------------------------------------- values

    def values(self) -> dict[str, Any]:
        """The arguments as JSON-able values of the declared types; empty optional fields
        (and text that is no value at all) left out."""
        out: dict[str, Any] = {}
        for name, field in self._fields.items():
            try:
                value = field.read()
            except ValueError:
                continue
            if value is not MISSING:
                out[name] = value
        return out

    def time_limit(self) -> float | None:
        """The time limit typed in the Advanced section, in seconds; None when it is empty
        (the task's default) or not a number."""
        field = self._time_limit
        if field is None:
            return None
        try:
            value = field.read()
        except ValueError:
            return None
        return None if value is MISSING else float(value)

    def set_time_limit(self, seconds: float | None) -> None:
        """Show a time limit (e.g. a task's, to run it again): the task's own default (or
        None) shows the field empty; another value opens the Advanced section."""
        field = self._time_limit
        if field is None:
            return
        if seconds is None or seconds == field.task_default:
            field.write(None)
        else:
            field.write(seconds)
            self.set_advanced_expanded(True)
        self._show_field_error(field, "")

    def set_values(self, args: dict[str, Any]) -> None:
        """Fill the form with `args` (e.g. to run a task again); parameters not in `args`
        get their defaults, unknown keys are ignored. Clears the errors."""
        for name, field in self._fields.items():
            if args.get(name) is None:
                field.reset()
            else:
                field.write(args[name])
        self.clear_errors()

    # ---------------------------------------------------------------- errors

    def validate(self) -> dict[str, str]:
        """Check every field as the server would (required, bounds, lengths, patterns,
        absolute paths), show each problem beside its field and clear the others.

        Returns:
            The problems by parameter name; empty when the form may be submitted.
        """
        errors: dict[str, str] = {}
        for name, field in self._named_fields():
            problem = field.problem()
            if problem:
                errors[name] = problem
            self._show_field_error(field, problem or "")
        self._focus_first_error(errors)
        return errors

    def _named_fields(self) -> list[tuple[str, _Field]]:
        """Every field with the key its errors go by: the parameters by name, then the time
        limit as "timeout" (the submit's key for it)."""
        fields: list[tuple[str, _Field]] = list(self._fields.items())
        if self._time_limit is not None:
            fields.append((TIME_LIMIT, self._time_limit))
        return fields

    def set_field_errors(self, fields: dict[str, str]) -> None:
        """Show the server's field errors (a 422 answer) beside the fields; a key that is no
        field (e.g. "args") goes to the general error line at the top."""
        self.clear_errors()
        general = []
        for key, message in fields.items():
            field = self._fields.get(key)
            if field is None and key == TIME_LIMIT:
                field = self._time_limit
            if field is None:
                general.append(f"{'Arguments' if key == 'args' else key}: {message}")
            else:
                self._show_field_error(field, message)
        if general:
            self.set_general_error("\n".join(general))
        self._focus_first_error(fields)

    def set_general_error(self, message: str) -> None:
        """Show (or with "" hide) the error line at the top of the form."""
        label = self._general_error
        if label is None:
            return
        label.setText(message)
        label.setVisible(bool(message))

    def errors(self) -> dict[str, str]:
        """The field errors shown now, by parameter name."""
        return {name: f.message for name, f in self._named_fields() if f.message}

    def clear_errors(self) -> None:
        """Hide every error."""
        for _name, field in self._named_fields():
            self._show_field_error(field, "")
        self.set_general_error("")

    def _show_field_error(self, field: _Field, message: str) -> None:
        if field.message == message:
            return
        field.message = message
        field.error.setText(message[:1].upper() + message[1:])  # "is required" -> "Is required"
        if field.row_layout is not None:
            field.row_layout.setRowVisible(field.error, bool(message))
        if message and field is self._time_limit:
            self.set_advanced_expanded(True)  # an error in a closed section is no help
        self._mark_editor(field)
        field.editor.setAccessibleDescription(
            f"Error: {message}. {field.description}" if message else field.description)

    def _clear_field_error(self, field: _Field) -> None:
        self._show_field_error(field, "")

    def _focus_first_error(self, errors: dict[str, str]) -> None:
        for name, field in self._named_fields():
            if name in errors:
                field.editor.setFocus(Qt.FocusReason.OtherFocusReason)
                self._scroll.ensureWidgetVisible(field.widget)
                return

    def _paint_errors(self) -> None:
        """Colour the error labels and tint the invalid editors for the current palette."""
        red = error_color(self.palette())
        fields = [f for _name, f in self._named_fields()]
        labels = [f.error for f in fields]
        if self._general_error is not None:
            labels.append(self._general_error)
        for label in labels:
            palette = label.palette()
            palette.setColor(QPalette.ColorRole.WindowText, red)
            label.setPalette(palette)
        for field in fields:
            self._mark_editor(field, red)

    def _mark_editor(self, field: _Field, red: QColor | None = None) -> None:
        # A tinted background rather than a style-sheet border: a style sheet on a spin box
        # or a combo box replaces its native arrows, and a tint reads in every style.
        editor = field.editor
        editor.setProperty("invalid", bool(field.message))
        if not field.message:
            editor.setPalette(QPalette())  # an empty palette inherits the form's again
            return
        red = red or error_color(self.palette())
        palette = self.palette()
        # Fusion draws the frame in a darker Window colour: a redder Window, a red frame.
        for role, amount in ((QPalette.ColorRole.Window, 0.6), (QPalette.ColorRole.Base, 0.15),
                             (QPalette.ColorRole.Button, 0.3)):  # fmt: skip
            palette.setColor(role, _blend(palette.color(role), red, amount))
        editor.setPalette(palette)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        # Follow a switch between light and dark palettes.
        if event.type() == QEvent.Type.PaletteChange:
            self._paint_errors()
        super().changeEvent(event)

    # ---------------------------------------------------------------- running

    def submit(self) -> None:
        """Check the form and, if it is fine, emit `run_requested` (Run button, Ctrl+Enter)."""
        if self._spec is None or self._busy:
            return
        self.set_general_error("")
        self._live_timer.stop()
        self._live_pending.clear()
        if self.validate():
            return
        self.remember_values()
        self.run_requested.emit(self._spec["name"], self.values(), self.time_limit())

    def set_paths_local(self, local: bool) -> None:
        """Whether the paths typed are this computer's (its own services) or a remote
        server's: only this computer's are looked at here before the server checks them."""
        self._paths_local = local
        for field in self._fields.values():
            if isinstance(field, _PathField):
                field.local = local

    def set_busy(self, busy: bool) -> None:
        """While a submit is in flight: the Run button is disabled and says "Submitting…"."""
        self._busy = busy
        self.run_button.setEnabled(not busy)
        self.run_button.setText(BUSY_TEXT if busy else RUN_TEXT)

    def is_busy(self) -> bool:
        return self._busy

    # ---------------------------------------------------------------- paths

    def choose_path(self, path_kind: str, start: str, caption: str) -> str:
        """Ask the user for a path in a file dialog; "" if they cancel.

        Args:
            path_kind: "file", "directory" or "new_file" (see `PathKind`).
            start: the folder (or file) the dialog opens at.
            caption: the dialog's title.
        """
        if path_kind == PathKind.DIRECTORY:
            return QFileDialog.getExistingDirectory(self, caption, start)
        if path_kind == PathKind.NEW_FILE:
            # The task's own "overwrite" parameter decides about an existing file.
            path, _ = QFileDialog.getSaveFileName(
                self, caption, start, options=QFileDialog.Option.DontConfirmOverwrite)
            return path
        path, _ = QFileDialog.getOpenFileName(self, caption, start)
        return path

    def _on_browse_clicked(self, field: _PathField, path_kind: str) -> None:
        current = os.path.expanduser(field.editor.text().strip())
        if current and os.path.isabs(current):
            start = current if os.path.exists(current) else os.path.dirname(current)
        else:
            start = os.path.expanduser("~")
        path = self.choose_path(path_kind, start, field.title)
        if path:
            field.editor.setText(path)
            field.editor.setFocus(Qt.FocusReason.OtherFocusReason)
