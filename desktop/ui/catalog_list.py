"""The catalog list: the tasks one can run; a file or folder dropped on an entry opens that
task's form with the path in its first path parameter.

Signals:
    path_dropped(name, path): `path` was dropped on the entry of the task `name`.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QListWidget, QWidget

from desktop.ui.task_form import dropped_path


class CatalogList(QListWidget):
    """A list of catalog entries (each item's UserRole: the task's name) taking drops."""

    path_dropped = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)
        self.has_path_param = lambda _name: True  # set by the window, from the catalog

    def _target(self, event: QDropEvent | QDragMoveEvent) -> str | None:
        item = self.itemAt(event.position().toPoint())
        if item is None:
            return None
        name = item.data(Qt.ItemDataRole.UserRole)
        return name if isinstance(name, str) and self.has_path_param(name) else None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if dropped_path(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 (Qt's name)
        if dropped_path(event) is not None and self._target(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt's name)
        path, name = dropped_path(event), self._target(event)
        if path is None or name is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.path_dropped.emit(name, path)
