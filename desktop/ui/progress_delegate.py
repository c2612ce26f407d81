"""The Progress column's painter: a native progress bar for running and finished tasks."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QFont, QPainter, QPixmap
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
_CACHED_CELLS = 600  # cells kept drawn (a size, a fraction, a text, a look each)


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
        # screenful of bars repainted at every flush: each look of a cell (its background,
        # selection and focus, and the bar) is drawn once, then copied.
        self._cells: dict[tuple[object, ...], QPixmap] = {}
        self._font = QFont()  # the font of what the cache holds

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        # Plain values only: a dict (TaskRole) would cross Qt as a QVariantMap, key by key.
        state = index.data(TaskModel.StateRole)
        if state not in (TaskState.RUNNING.value, TaskState.SUCCEEDED.value):
            super().paint(painter, option, index)
            return
        fraction = 1.0 if state == TaskState.SUCCEEDED.value else index.data(
            TaskModel.ProgressRole)  # fmt: skip
        text = index.data()  # the bar carries the cell's text
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        if fraction is None:  # the busy look: the style may animate it, drawn each time
            self._draw(painter, option, index, style, text, None, option.rect)
            return
        rect = option.rect
        # To the pixel: finer steps look the same, and each would be drawn anew.
        pixels = max(1, rect.width() - 2 * self.MARGIN)
        progress = round(round(min(max(float(fraction), 0.0), 1.0) * pixels)
                         * _STEPS / pixels)  # fmt: skip
        device = painter.device()
        ratio = device.devicePixelRatioF() if device is not None else 1.0
        font = painter.font()  # the bar's text is drawn in it
        if font != self._font:  # what was drawn in another font is of no more use
            self._cells.clear()
            self._font = font
        key = (rect.width(), rect.height(), ratio, progress, text, int(option.state.value),
               int(option.features.value), option.palette.cacheKey(), option.direction,
               id(style))  # fmt: skip
        pixmap = self._cells.get(key)
        if pixmap is None:
            pixmap = QPixmap(rect.size() * ratio)
            pixmap.setDevicePixelRatio(ratio)
            pixmap.fill(Qt.GlobalColor.transparent)
            offscreen = QPainter(pixmap)
            offscreen.setFont(font)
            try:
                self._draw(offscreen, option, index, style, text, progress,
                           QRect(QPoint(0, 0), rect.size()))  # fmt: skip
            finally:
                offscreen.end()
            if len(self._cells) >= _CACHED_CELLS:
                del self._cells[next(iter(self._cells))]
            self._cells[key] = pixmap
        painter.drawPixmap(rect.topLeft(), pixmap)

    def _draw(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex, style: QStyle, text: str,
              progress: int | None, rect: QRect) -> None:  # fmt: skip
        """Draw the cell in `rect`: `progress` in steps of `_STEPS`, None for the busy look."""
        widget = option.widget
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        item.text = ""  # the bar carries the text
        item.rect = rect
        # The cell itself first: background, selection and focus as the view draws them.
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, widget)
        bar = QStyleOptionProgressBar()
        bar.rect = rect.adjusted(self.MARGIN, self.MARGIN, -self.MARGIN, -self.MARGIN)
        enabled = option.state & QStyle.StateFlag.State_Enabled
        bar.state = enabled | QStyle.StateFlag.State_Horizontal
        bar.direction = option.direction
        bar.palette = option.palette
        bar.fontMetrics = option.fontMetrics
        bar.minimum = 0
        if progress is None:
            bar.maximum = bar.progress = 0  # minimum == maximum: the style's busy look
        else:
            bar.maximum = _STEPS
            bar.progress = progress
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
