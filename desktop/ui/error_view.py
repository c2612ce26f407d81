"""The error section of the detail pane: why a failed (or cancelled) task ended, in words,
its error code and traceback (collapsed), and what the user can do next.

Signals:
    rerun_clicked(): "Run again" (the same arguments).
    edit_clicked(): "Edit and run again" (the form, filled in with its arguments).
    overwrite_clicked(): "Run again with Overwrite" (a destination that existed).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QFontDatabase, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import state_look
from services.core.params import OVERWRITE_PARAM
from services.core.wording import error_text

DESTINATION_EXISTS = "destination_exists"


def can_overwrite(task: dict[str, Any]) -> bool:
    """Whether "Run again with Overwrite" applies: it failed on an existing destination and
    its task has an Overwrite switch (its arguments, defaults filled in, name it) that
    was off."""
    error = task.get("error")
    args = task.get("args") or {}
    return (task.get("state") == "failed" and isinstance(error, dict)
            and error.get("code") == DESTINATION_EXISTS
            and args.get(OVERWRITE_PARAM) is False)  # fmt: skip


class ErrorView(QFrame):
    """A finished task's failure, shown above the detail pane's tabs (hidden otherwise)."""

    rerun_clicked = Signal()
    edit_clicked = Signal()
    overwrite_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("error_view")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._kind: str | None = None
        self.icon = QLabel(self)
        self.icon.setFixedSize(16, 16)
        self.message = QLabel(self)
        self.message.setObjectName("error_message")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setAccessibleName("Why the task failed")
        font = self.message.font()
        font.setBold(True)
        self.message.setFont(font)
        self.code = QLabel(self)
        self.code.setObjectName("error_code")
        self.code.setTextFormat(Qt.TextFormat.PlainText)
        self.code.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.traceback_toggle = QToolButton(self)
        self.traceback_toggle.setObjectName("traceback_toggle")
        self.traceback_toggle.setText("Traceback")
        self.traceback_toggle.setCheckable(True)
        self.traceback_toggle.setAutoRaise(True)
        self.traceback_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.traceback_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.traceback_toggle.toggled.connect(self._on_traceback_toggle_toggled)
        self.traceback = QPlainTextEdit(self)
        self.traceback.setObjectName("error_traceback")
        self.traceback.setReadOnly(True)
        self.traceback.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.traceback.setAccessibleName("Traceback")
        self.traceback.setMaximumHeight(160)
        self.traceback.hide()

        self.rerun_button = QPushButton("Run again", self)
        self.rerun_button.setObjectName("rerun_button")
        self.rerun_button.setToolTip("Run the task again with the same arguments")
        self.rerun_button.clicked.connect(self.rerun_clicked)
        self.edit_button = QPushButton("Edit and run again…", self)
        self.edit_button.setObjectName("edit_rerun_button")
        self.edit_button.setToolTip("Open the task's form with these arguments to change them")
        self.edit_button.clicked.connect(self.edit_clicked)
        self.overwrite_button = QPushButton("Run again with Overwrite", self)
        self.overwrite_button.setObjectName("overwrite_rerun_button")
        self.overwrite_button.setToolTip("Run it again, replacing the destination that exists")
        self.overwrite_button.clicked.connect(self.overwrite_clicked)

        top = QHBoxLayout()
        top.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(self.message, 1)
        # One row for the code, the traceback's toggle and the actions where the width
        # allows (a small window keeps its height for the table), else the actions below.
        self.actions = QWidget(self)
        buttons = QHBoxLayout(self.actions)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.overwrite_button)
        buttons.addWidget(self.rerun_button)
        buttons.addWidget(self.edit_button)
        self._row = QHBoxLayout()
        self._row.addWidget(self.code)
        self._row.addWidget(self.traceback_toggle)
        self._row.addStretch(1)
        self._row.addWidget(self.actions)
        self._below = QHBoxLayout()
        self._below.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(self._row)
        layout.addLayout(self._below)
        layout.addWidget(self.traceback)
        # Its width is whatever the pane has: the actions move below rather than widen it.
        policy = self.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.setSizePolicy(policy)
        self.hide()

    def show_task(self, task: dict[str, Any] | None, reason: str = "") -> None:
        """Show why `task` failed or was cancelled (`reason`: its cancel reason, if any);
        hide for any other task."""
        kind = state_look.outcome(task) if task else None
        if task is None or kind not in state_look.FAILURES:
            self._kind = None
            self.hide()
            return
        self._kind = kind
        error = task.get("error") if isinstance(task.get("error"), dict) else None
        if kind == state_look.CANCELLED:
            text = reason or task.get("message") or "Cancelled"
        else:
            text = error_text(error)
        self.message.setText(text[:1].upper() + text[1:])
        code = (error or {}).get("code") if kind != state_look.CANCELLED else None
        self.code.setText(f"Code: {code}" if code else "")
        self.code.setVisible(bool(code))
        trace = (error or {}).get("traceback") if kind != state_look.CANCELLED else None
        self.traceback.setPlainText(trace or "")
        self.traceback_toggle.setVisible(bool(trace))
        self.traceback.setVisible(bool(trace) and self.traceback_toggle.isChecked())
        self.overwrite_button.setVisible(can_overwrite(task))
        self._paint()
        self.show()
        self._place_actions()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._place_actions()

    def _place_actions(self) -> None:
        one_row = (self.code.sizeHint().width() + self.traceback_toggle.sizeHint().width()
                   + self.actions.sizeHint().width() + 40)  # fmt: skip
        below = self.width() < one_row
        if below and self._below.indexOf(self.actions) < 0:
            self._row.removeWidget(self.actions)
            self._below.insertWidget(0, self.actions)
        elif not below and self._row.indexOf(self.actions) < 0:
            self._below.removeWidget(self.actions)
            self._row.addWidget(self.actions)

    def _on_traceback_toggle_toggled(self, open_: bool) -> None:
        self.traceback_toggle.setArrowType(Qt.ArrowType.DownArrow if open_
                                           else Qt.ArrowType.RightArrow)  # fmt: skip
        self.traceback.setVisible(open_ and bool(self.traceback.toPlainText()))

    def _paint(self) -> None:
        palette = self.palette()
        color = state_look.outcome_color(self._kind, palette)
        icon = state_look.outcome_icon(self._kind, palette)
        label = self.message.palette()
        if color is not None:
            label.setColor(QPalette.ColorRole.WindowText, color)
        self.message.setPalette(label)
        if icon is not None:
            self.icon.setPixmap(icon.pixmap(16, 16))
        else:
            self.icon.clear()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange and self._kind is not None:
            self._paint()
        super().changeEvent(event)
