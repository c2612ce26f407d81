"""The progress bar delegate: paints every state in a real table, offscreen."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRect
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QStyle, QStyleOptionViewItem, QTableView

from desktop.task_model import TaskModel
from desktop.ui.progress_delegate import ProgressDelegate
from services.core import taskview

COL = TaskModel.Column
T0 = 1_795_000_000.0
# (id, state, progress), oldest first: the table shows them bottom up.
TASKS = [
    ("queued", "queued", None),
    ("busy", "running", None),
    ("quarter", "running", 0.25),
    ("three_quarters", "running", 0.75),
    ("done", "succeeded", 1.0),
    ("failed", "failed", 0.4),
    ("cancelled", "cancelled", None),
]


@pytest.fixture
def model(qtbot):
    model = TaskModel()
    tasks = []
    for i, (tid, state, progress) in enumerate(TASKS):
        task = taskview.new_task(tid, "demo.answer", {}, T0 + i)
        del task["seq"]
        task.update(state=state, progress=progress, attempt=1 if state != "queued" else 0)
        tasks.append(task)
    model.load(tasks)
    return model


@pytest.fixture
def view(qtbot, model):
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.setItemDelegateForColumn(COL.PROGRESS, ProgressDelegate(view))
    view.resize(900, 320)
    return view


def paint_cell(view: QTableView, row: int, size=(200, 24), font=None) -> QImage:
    """The Progress cell of `row` as the delegate paints it alone (`font`: the painter's)."""
    index = view.model().index(row, COL.PROGRESS)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = QRect(0, 0, *size)
    image = QImage(*size, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    if font is not None:
        painter.setFont(font)
    try:
        view.itemDelegateForColumn(COL.PROGRESS).paint(painter, option, index)
    finally:
        painter.end()
    return image


def colours(image: QImage) -> int:
    return len({image.pixel(x, y) for x in range(image.width()) for y in range(image.height())})


def test_the_table_paints_every_state(view):
    shot = view.grab()
    assert not shot.isNull() and shot.width() == 900
    image = shot.toImage()
    model = view.model()
    cell = view.visualRect(model.index(model.row_of("quarter"), COL.PROGRESS))
    cell.translate(view.viewport().pos())
    region = image.copy(cell)
    assert colours(region) > 3  # a bar with text, not an empty cell


def test_every_state_paints_on_its_own(view):
    model = view.model()
    images = {tid: paint_cell(view, model.row_of(tid)) for tid, _, _ in TASKS}
    assert colours(images["queued"]) == 1  # nothing to show yet
    for tid in ("busy", "quarter", "three_quarters", "done", "failed", "cancelled"):
        assert colours(images[tid]) > 1, tid
    # A bar fills with progress: a third of the way along, 75 % is filled and 25 % is not.
    x, y = 200 // 3, 12
    assert images["quarter"].pixel(x, y) != images["three_quarters"].pixel(x, y)
    assert images["three_quarters"].pixel(x, y) == images["done"].pixel(x, y)


def test_a_selected_running_row_paints(view):
    model = view.model()
    index = model.index(model.row_of("quarter"), COL.PROGRESS)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = QRect(0, 0, 160, 24)
    option.state |= QStyle.StateFlag.State_Selected
    image = QImage(160, 24, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        view.itemDelegateForColumn(COL.PROGRESS).paint(painter, option, index)
    finally:
        painter.end()
    assert colours(image) > 1


def test_size_hint_fits_the_text(view):
    model = view.model()
    delegate = view.itemDelegateForColumn(COL.PROGRESS)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    for tid, _, _ in TASKS:
        hint = delegate.sizeHint(option, model.index(model.row_of(tid), COL.PROGRESS))
        assert hint.width() >= max(ProgressDelegate.MIN_WIDTH,
                                   option.fontMetrics.horizontalAdvance("100 %"))  # fmt: skip
        assert option.fontMetrics.height() < hint.height() < 4 * option.fontMetrics.height()


def test_a_cell_from_the_cache_is_the_cell_drawn_anew(view):
    model = view.model()
    row = model.row_of("quarter")
    first = paint_cell(view, row)
    assert paint_cell(view, row) == first  # the second comes from the cache
    view.setItemDelegateForColumn(COL.PROGRESS, ProgressDelegate(view))  # an empty cache
    assert paint_cell(view, row) == first


def test_the_cache_keeps_selection_and_fonts_apart(view):
    model = view.model()
    row = model.row_of("three_quarters")
    plain = paint_cell(view, row)
    index = model.index(row, COL.PROGRESS)
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = QRect(0, 0, 200, 24)
    option.state |= QStyle.StateFlag.State_Selected
    selected = QImage(200, 24, QImage.Format.Format_ARGB32)
    selected.fill(QColor("white"))
    painter = QPainter(selected)
    try:
        view.itemDelegateForColumn(COL.PROGRESS).paint(painter, option, index)
    finally:
        painter.end()
    assert selected != plain
    assert paint_cell(view, row) == plain
    font = view.font()
    font.setPointSizeF(font.pointSizeF() * 1.5)
    bigger = paint_cell(view, row, font=font)
    assert bigger != plain  # drawn anew in the painter's font
    view.setItemDelegateForColumn(COL.PROGRESS, ProgressDelegate(view))  # an empty cache
    assert paint_cell(view, row, font=font) == bigger
