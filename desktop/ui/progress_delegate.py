"""The Progress column's painter: a native progress bar for running and finished tasks."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QPainter, QPixmap
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
_CACHED_BARS = 600  # bars kept drawn (a size, a fraction, a text, a palette each)


class ProgressDelegate(QStyledItemDelegate):
    """Paints `TaskModel.ProgressRole` as a progress bar drawn by the current style.

    A running task shows its bar with "45 %", or a busy bar with "…" when it reports no
    fraction; a succeeded task a full bar with "done". Other states are plain text (the
    model's display text: empty while queued, the state once failed or cancelled).
    """

    MARGIN = 2
    MIN_WIDTH = 80

    def __init__(self, parent: object = None) -> None:
        super().__init__(parent)
        # The style draws a bar in about half a millisecond, and 200 streaming tasks are a
        # screenful of bars repainted at every flush: each look is drawn once, then copied.
        self._bars: dict[tuple[object, ...], QPixmap] = {}

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
            # To the pixel: finer steps look the same, and each would be drawn anew.
            pixels = max(1, bar.rect.width())
            bar.maximum = _STEPS
            bar.progress = round(round(min(max(float(fraction), 0.0), 1.0) * pixels)
                                 * _STEPS / pixels)  # fmt: skip
        bar.text = text
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        if fraction is None:  # the busy look: the style may animate it, drawn each time
            style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)
            return
        at = bar.rect.topLeft()
        painter.drawPixmap(at, self._bar(bar, style, widget, painter))

    def _bar(self, bar: QStyleOptionProgressBar, style: QStyle, widget: object,
             painter: QPainter) -> QPixmap:  # fmt: skip
        size = bar.rect.size()
        ratio = painter.device().devicePixelRatioF() if painter.device() else 1.0
        key = (size.width(), size.height(), ratio, bar.progress, bar.text,
               bar.palette.cacheKey(), int(bar.state.value), bar.direction,
               bar.fontMetrics.height(), id(style))  # fmt: skip
        pixmap = self._bars.get(key)
        if pixmap is None:
            pixmap = QPixmap(size * ratio)
            pixmap.setDevicePixelRatio(ratio)
            pixmap.fill(Qt.GlobalColor.transparent)
            bar.rect = QRect(QPoint(0, 0), size)
            offscreen = QPainter(pixmap)
            style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, offscreen, widget)
            offscreen.end()
            if len(self._bars) >= _CACHED_BARS:
                del self._bars[next(iter(self._bars))]
            self._bars[key] = pixmap
        return pixmap

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        hint = super().sizeHint(option, index)
        metrics = option.fontMetrics
        width = max(hint.width(), self.MIN_WIDTH, metrics.horizontalAdvance("100 %") + 24)
        height = max(hint.height(), metrics.height() + 2 * self.MARGIN + 4)
        return QSize(width, height)
