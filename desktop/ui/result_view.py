"""The result of a task as it reads: the fields its catalog entry declares, or its JSON as a
tree.

The rules (summary, which field is which type, how a size or a ratio reads) are
`services.core.resultview`'s, shared with the command line; this module only draws them:
a path is a link that opens the file and one that shows its folder, a digest a monospace
line with a copy button, a list of records a table, an action ("Open report") a button.
Opening something that no application is set to open says so (`open_failed`), never
nothing at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from services.core import resultview as rv

OUTPUT_TAIL = 5  # lines of a program's output shown with its result
TREE_CHILDREN = 500  # children of one JSON node drawn (the rest are counted)


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))  # fmt: skip


def _folder_of(path: str) -> str:
    return os.path.dirname(path) if not os.path.isdir(path) else path


class ResultView(QWidget):
    """Draws one result. Call `show_result`; it redraws only when the result changed.

    Signals:
        opened(str): a path was handed to the desktop's opener, which took it.
        open_failed(str): the opener could not open a path (the sentence to show).
        output_requested(): the user asked for the whole output (the Output tab).
    """

    opened = Signal(str)
    open_failed = Signal(str)
    output_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # What opens a file: the desktop's own opener (tests give theirs).
        self.opener: Callable[[QUrl], bool] = QDesktopServices.openUrl
        # The server whose files a result names when they are not on this computer (a
        # remote server on another machine), "" when they are here.
        self.files_on = ""
        self._shown: tuple[Any, ...] | None = None
        self._result: Any = None
        self.view: rv.ResultView | None = None
        self._mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setAccessibleName("Result summary")
        self.problem = QLabel()  # what went wrong opening a file, in the pane itself
        self.problem.setWordWrap(True)
        self.problem.setAccessibleName("Could not open")
        self.problem.hide()
        self.copy_button = QPushButton("Copy JSON")
        self.copy_button.setToolTip("Copy the whole result as JSON")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.copy_button)

        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.body)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.problem)
        layout.addWidget(scroll, 1)
        # What the current result drew, for tests and for keyboard users' tab order.
        self.field_widgets: dict[str, QWidget] = {}
        self.tables: dict[str, QTableWidget] = {}
        self.action_buttons: list[QPushButton] = []
        self.tree: QTreeWidget | None = None
        self.output_tail: QPlainTextEdit | None = None

    # -------------------------------------------------------------- drawing

    def show_result(self, result: Any, display: dict[str, Any] | None,
                    output: list[str] | None = None) -> None:  # fmt: skip
        """Draw `result` as `display` says (None: as a JSON tree); `output`, the task's
        latest output lines, for a field of type output."""
        tail = tuple((output or [])[-OUTPUT_TAIL:])
        key = (json.dumps(result, sort_keys=True, default=str),
               json.dumps(display, sort_keys=True), tail)  # fmt: skip
        if key == self._shown:
            return
        self._shown = key
        self._result = result
        self._clear_body()
        view = self.view = rv.render(result, display, width=200)
        self.summary.setText(f"<b>{_esc(view.summary)}</b>" if view.summary else "")
        if not view.declared:
            if isinstance(result, dict | list):
                self._draw_tree(result)
            else:  # 42, or a text: itself, whole
                text = QPlainTextEdit(result if isinstance(result, str) else json.dumps(result))
                text.setReadOnly(True)
                text.setFont(self._mono)
                text.setAccessibleName("Result")
                self.body_layout.addWidget(text, 1)
            return
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        tables = []
        for f in view.fields:
            if f.type is rv.FieldType.TABLE:
                tables.append(f)
                continue
            w = self._field_widget(f, list(tail))
            self.field_widgets[f.key if f.key not in self.field_widgets else
                               f"{f.key}:{f.type.value}"] = w  # fmt: skip
            form.addRow(f"{f.label}:", w)
        self.body_layout.addLayout(form)
        for f in tables:
            self._draw_table(f)
        if view.actions:
            row = QHBoxLayout()
            for a in view.actions:
                b = QPushButton(a.label)
                b.setToolTip(a.path)
                b.clicked.connect(lambda _=False, p=a.path: self.open_path(p))
                self.action_buttons.append(b)
                row.addWidget(b)
            row.addStretch(1)
            self.body_layout.addLayout(row)
        self.body_layout.addStretch(1)

    def clear(self) -> None:
        self._shown = None
        self._result = None
        self.view = None
        self.summary.clear()
        self.problem.hide()
        self._clear_body()

    def _clear_body(self) -> None:
        self.field_widgets = {}
        self.tables = {}
        self.action_buttons = []
        self.tree = None
        self.output_tail = None
        _clear_layout(self.body_layout)

    def _field_widget(self, f: rv.Field, tail: list[str]) -> QWidget:
        kind = f.type
        if kind is rv.FieldType.PATH and isinstance(f.value, str):
            label = QLabel(
                f"{_esc(f.text)} &nbsp; <a href='open'>Open</a> · <a href='folder'>Show folder</a>")
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setToolTip(f.value)
            label.setWordWrap(True)
            label.linkActivated.connect(
                lambda link, p=f.value: self.open_path(p if link == "open" else _folder_of(p)))
            label.setAccessibleName(f"{f.label}: {f.text}")
            return label
        if kind is rv.FieldType.DIGEST:
            box = QWidget()
            row = QHBoxLayout(box)
            row.setContentsMargins(0, 0, 0, 0)
            line = QLineEdit(f.text)
            line.setReadOnly(True)
            line.setFont(self._mono)
            line.setCursorPosition(0)
            line.setAccessibleName(f.label)
            copy = QToolButton()
            copy.setText("Copy")
            copy.setToolTip(f"Copy the {f.label.lower()}")
            copy.clicked.connect(lambda _=False, t=f.text: self._copy(t, f.label))
            row.addWidget(line, 1)
            row.addWidget(copy)
            return box
        if kind is rv.FieldType.OUTPUT:
            box = QWidget()
            col = QVBoxLayout(box)
            col.setContentsMargins(0, 0, 0, 0)
            label = QLabel(f"{_esc(f.text)} &nbsp; <a href='output'>Show all</a>")
            label.linkActivated.connect(lambda _link: self.output_requested.emit())
            col.addWidget(label)
            if tail:
                text = QPlainTextEdit("\n".join(tail))
                text.setReadOnly(True)
                text.setFont(self._mono)
                text.setMaximumHeight(text.fontMetrics().lineSpacing() * (OUTPUT_TAIL + 1) + 8)
                text.setAccessibleName("Last output lines")
                self.output_tail = text
                col.addWidget(text)
            return box
        label = QLabel(_esc(f.text))
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setWordWrap(True)
        if kind is rv.FieldType.BYTES and isinstance(f.value, int):
            label.setToolTip(f"{f.value:,} bytes")
        if kind is rv.FieldType.CODE:
            label.setFont(self._mono)
        return label

    def _draw_table(self, f: rv.Field) -> None:
        title = QLabel(f"<b>{_esc(f.label)}</b> ({_esc(f.text)})" + (
            f" — the first {len(f.rows):,} shown" if f.total_rows > len(f.rows) else ""))
        table = QTableWidget(len(f.rows), len(f.columns))
        table.setHorizontalHeaderLabels([c.label for c in f.columns])
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        table.setAccessibleName(f.label)
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for r, cells in enumerate(f.rows):
            for c, (text, col) in enumerate(zip(cells, f.columns, strict=True)):
                item = QTableWidgetItem(text)
                if col.type is rv.FieldType.DIGEST:
                    item.setFont(self._mono)
                if col.type in (rv.FieldType.BYTES, rv.FieldType.COUNT, rv.FieldType.NUMBER,
                                rv.FieldType.RATIO):  # fmt: skip
                    item.setTextAlignment(right)
                item.setToolTip(text)
                table.setItem(r, c, item)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        table.resizeColumnsToContents()
        header.setStretchLastSection(True)
        table.setMinimumHeight(min(12, max(3, len(f.rows) + 1)) * table.verticalHeader()
                               .defaultSectionSize())  # fmt: skip
        self.tables[f.key] = table
        self.body_layout.addWidget(title)
        self.body_layout.addWidget(table, 1)

    def _draw_tree(self, value: Any) -> None:
        tree = QTreeWidget()
        tree.setHeaderLabels(["Key", "Value"])
        tree.setAccessibleName("Result")
        tree.setUniformRowHeights(True)
        _fill_tree(tree.invisibleRootItem(), value)
        tree.expandToDepth(0)
        tree.resizeColumnToContents(0)
        tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        tree.customContextMenuRequested.connect(self._on_tree_context_menu_requested)
        self.tree = tree
        self.body_layout.addWidget(tree, 1)

    # -------------------------------------------------------------- actions

    def open_path(self, path: str) -> bool:
        """Hand `path` to the desktop's opener; say so when it could not (no application
        set for it, or the path is gone)."""
        name = os.path.basename(path.rstrip("/")) or path
        if self.files_on:  # a file here by that name would be another file
            message = (f"Could not open {name}: it is on the server {self.files_on}, not on "
                       f"this computer ({path})")  # fmt: skip
            ok = False
        elif not os.path.exists(path):
            message = f"Could not open {name}: {path} no longer exists."
            ok = False
        else:
            ok = bool(self.opener(QUrl.fromLocalFile(path)))
            message = (f"Opened {name}." if ok else
                       f"Could not open {name}: no application is set up to open it. "
                       f"It is at {path}")  # fmt: skip
        if ok:
            self.problem.hide()
            self.opened.emit(path)
        else:
            self.problem.setText(message)
            self.problem.show()
            self.open_failed.emit(message)
        return ok

    def _on_tree_context_menu_requested(self, pos: Any) -> None:
        tree = self.tree
        item = tree.itemAt(pos) if tree is not None else None
        if tree is None or item is None:
            return
        menu = QMenu(tree)
        menu.addAction("Copy value", lambda: self._copy(tree_value_text(item), "value"))
        menu.popup(tree.viewport().mapToGlobal(pos))

    def _copy(self, text: str, what: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.problem.hide()

    def _on_copy_button_clicked(self) -> None:
        result = self._result
        text = result if isinstance(result, str) else json.dumps(result, indent=2,
                                                                 ensure_ascii=False)
        QGuiApplication.clipboard().setText(text)


def tree_value_text(item: QTreeWidgetItem) -> str:
    """What "Copy value" copies for a tree item: its value as JSON (a whole object or list
    for a branch), or the text itself."""
    value = item.data(0, Qt.ItemDataRole.UserRole)
    return value if isinstance(value, str) else json.dumps(value, indent=2,
                                                           ensure_ascii=False, default=str)


def _fill_tree(parent: QTreeWidgetItem, value: Any) -> None:
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        item = QTreeWidgetItem(["", json.dumps(value, ensure_ascii=False, default=str)])
        parent.addChild(item)
        return
    for key, v in items[:TREE_CHILDREN]:
        if isinstance(v, dict | list):
            summary = f"{{{len(v)} keys}}" if isinstance(v, dict) else f"[{len(v)} items]"
            item = QTreeWidgetItem([str(key), summary])
            item.setData(0, Qt.ItemDataRole.UserRole, v)
            _fill_tree(item, v)
        else:
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            item = QTreeWidgetItem([str(key), text])
            item.setData(0, Qt.ItemDataRole.UserRole, v)
            item.setToolTip(1, text[:2000])
        parent.addChild(item)
    if len(items) > TREE_CHILDREN:
        parent.addChild(QTreeWidgetItem(["…", f"{len(items) - TREE_CHILDREN:,} more"]))


def _clear_layout(layout: Any) -> None:
    while layout.count():
        item = layout.takeAt(0)
        w = item.widget()
        if w is not None:
            w.setParent(None)
            w.deleteLater()
        elif item.layout() is not None:
            _clear_layout(item.layout())
            item.layout().deleteLater()
