"""A dock with the services' live logs."""

from __future__ import annotations

from collections import deque

from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MAX_LINES = 5000


class LogDock(QDockWidget):
    """Shows every service's log lines as they arrive, filterable by service."""

    def __init__(self, services: tuple[str, ...], log_dir: str, parent: QWidget | None = None
                 ) -> None:  # fmt: skip
        super().__init__("Service logs", parent)
        self.setObjectName("log_dock")
        self._lines: deque[tuple[str, str]] = deque(maxlen=MAX_LINES)
        body = QWidget()
        self.filter = QComboBox()
        self.filter.addItem("All services", "")
        for name in services:
            self.filter.addItem(name, name)
        self.filter.setAccessibleName("Show the log of")
        self.filter.currentIndexChanged.connect(self._on_filter_changed)
        clear = QPushButton("Clear")
        clear.setAccessibleName("Clear the log view")
        clear.clicked.connect(self._on_clear_clicked)
        where = QLabel(f"Files: {log_dir}")
        where.setToolTip("Each service's full log is kept here")
        top = QHBoxLayout()
        top.addWidget(self.filter)
        top.addWidget(where, 1)
        top.addWidget(clear)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.view.setAccessibleName("Service log lines")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.view)
        self.setWidget(body)

    def append(self, service: str, line: str) -> None:
        """Add one line from `service`."""
        self._lines.append((service, line))
        wanted = self.filter.currentData()
        if not wanted or wanted == service:
            self._write(service, line)

    def text(self) -> str:
        return self.view.toPlainText()

    def _write(self, service: str, line: str) -> None:
        bar = self.view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.view.appendPlainText(f"[{service}] {line}")
        if at_end:
            self.view.moveCursor(QTextCursor.MoveOperation.End)

    def _on_filter_changed(self) -> None:
        self.view.clear()
        wanted = self.filter.currentData()
        for service, line in self._lines:
            if not wanted or wanted == service:
                self._write(service, line)

    def _on_clear_clicked(self) -> None:
        self._lines.clear()
        self.view.clear()
