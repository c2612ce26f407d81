"""The Progress column's painter: a native progress bar for running and finished tasks."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from desktop.task_model import TaskModel
from services.core.states import TaskState

_STEPS = 1000  # bar resolution: 0.1 %


class ProgressDelegate(QStyledItemDelegate):
    """Paints `TaskModel.ProgressRole` as a progress bar drawn by the current style.

    A running task shows its bar with "45 %", or a busy bar with "…" when it reports no
    fraction; a succeeded task a full bar with "done". Other states are plain text (the
    model's display text: empty while queued, the state once failed or cancelled).
    """

    MARGIN = 2
    MIN_WIDTH = 80

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        state = index.data(TaskModel.StateRole)
        if state not in (TaskState.RUNNING.value, TaskState.SUCCEEDED.value):
            super().paint(painter, option, index)
            return
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        text = item.text
        item.text = ""  # the bar carries the text
        widget = item.widget
        style = widget.style() if widget is not None else QApplication.style()
        # The cell itself first: background, selection and focus as the view draws them.
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, widget)

        fraction = 1.0 if state == TaskState.SUCCEEDED.value else index.data(
            TaskModel.ProgressRole)  # fmt: skip
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(self.MARGIN, self.MARGIN, -self.MARGIN, -self.MARGIN)
        enabled = option.state & QStyle.StateFlag.State_Enabled
        bar.state = enabled | QStyle.StateFlag.State_Horizontal
        bar.direction = option.direction
        bar.palette = option.palette
        bar.fontMetrics = option.fontMetrics
        bar.minimum = 0
        if fraction is None:
            bar.maximum = bar.progress = 0  # minimum == maximum: the style's busy look
        else:
            bar.maximum = _STEPS
            bar.progress = round(min(max(float(fraction), 0.0), 1.0) * _STEPS)
        bar.text = text
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        hint = super().sizeHint(option, index)
        metrics = option.fontMetrics
        width = max(hint.width(), self.MIN_WIDTH, metrics.horizontalAdvance("100 %") + 24)
        height = max(hint.height(), metrics.height() + 2 * self.MARGIN + 4)
        return QSize(width, height)
