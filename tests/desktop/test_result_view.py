"""Readable results and output that follows to the end, in the real app on real services:
each built-in task's result as its catalog display says, the Result column's summary,
"Open …" that says when nothing opened it, and a 100,000-line program whose Output tab
ends on its last line and whose "Save output…" writes every line from the event log."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLineEdit, QTreeWidget

from desktop.task_model import TaskModel
from desktop.ui.result_view import ResultView
from tests.desktop import test_app

WAIT = test_app.WAIT
running, runtime = test_app.running, test_app.runtime  # the real app on real services

RESULT = TaskModel.Column.RESULT


def _result_cell(running, task_id: str) -> str:
    m = running.app.model
    return m.index(m.row_of(task_id), RESULT).data()


def _shown(running, task_id: str) -> ResultView:
    w = running.window
    w.select_task(task_id)
    running.qtbot.waitUntil(lambda: w.detail.task_id == task_id
                            and w.detail.result_view.view is not None, timeout=WAIT)  # fmt: skip
    return w.detail.result_view


@pytest.mark.slow
def test_each_built_in_result_reads_as_its_display_says(running, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    contents = {"a.txt": b"x" * 1536, "b.txt": b"hello\n", "c.bin": bytes(range(256)) * 8}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    sales = tmp_path / "sales.csv"
    with sales.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["city", "amount", "when"])
        for i in range(30):
            writer.writerow([["Oslo", "Lima", "Pune"][i % 3], i * 1.5, f"2026-01-{i % 28 + 1:02d}"])

    checksum = running.run_task("files.checksum", path=str(folder))
    archive = running.run_task("files.archive", source=str(folder),
                               destination=str(tmp_path / "photos.zip"))  # fmt: skip
    report = running.run_task("report.csv", source=str(sales))
    for tid in (checksum, archive, report):
        running.wait_state(tid, "succeeded")

    # checksum: digest + files + size + a manifest table; the column says it in one line
    task = running.app.model.task_by_id(checksum)
    digest = task["result"]["digest"]
    total = sum(len(d) for d in contents.values())
    assert _result_cell(running, checksum) == f"3 files · 3.5 KiB · {digest[:12]}…"
    view = _shown(running, checksum)
    line = view.field_widgets["digest"].findChild(QLineEdit)
    assert line.text() == digest and line.isReadOnly()
    assert view.field_widgets["files"].text() == "3"
    assert view.field_widgets["bytes"].text() == "3.5 KiB"
    assert view.field_widgets["bytes"].toolTip() == f"{total:,} bytes"
    assert "Open</a>" in view.field_widgets["path"].text()
    manifest = view.tables["manifest"]
    assert [manifest.horizontalHeaderItem(c).text() for c in range(3)] == ["File", "Size",
                                                                           "Digest"]
    rows = {manifest.item(r, 0).text(): (manifest.item(r, 1).text(), manifest.item(r, 2).text())
            for r in range(manifest.rowCount())}  # fmt: skip
    assert rows["a.txt"] == ("1.5 KiB", hashlib.sha256(contents["a.txt"]).hexdigest())
    assert rows["b.txt"][0] == "6 B" and len(rows) == 3
    assert view.tree is None  # a declared display is not raw JSON

    # archive: path + size + ratio, and "Open archive" that says when nothing opened it
    result = running.app.model.task_by_id(archive)["result"]
    ratio = f"{result['bytes_out'] / result['bytes_in'] * 100:.1f} %"
    assert _result_cell(running, archive).startswith("photos.zip · ")
    view = _shown(running, archive)
    assert view.field_widgets["bytes_out:ratio"].text() == ratio  # the second bytes_out field
    assert view.field_widgets["files"].text() == "3"
    opened: list[str] = []
    view.opener = lambda url: opened.append(url.toLocalFile()) or False  # no opener set up
    [button] = view.action_buttons
    assert button.text() == "Open archive"
    button.click()
    assert opened == [str(tmp_path / "photos.zip")]
    message = running.window.status_message.text()
    assert message.startswith("Could not open photos.zip: no application is set up")
    assert view.problem.isVisibleTo(view) and view.problem.text() == message

    # CSV report: a per-column table and an "Open report" that opens it
    assert _result_cell(running, report) == "30 rows · 3 columns · sales.html"
    view = _shown(running, report)
    columns = view.tables["columns"]
    assert columns.rowCount() == 3
    header = [columns.horizontalHeaderItem(c).text() for c in range(columns.columnCount())]
    assert header[:3] == ["Column", "Type", "Missing"] and "Most common" in header
    by_name = {columns.item(r, 0).text(): r for r in range(3)}
    assert columns.item(by_name["amount"], 1).text() == "number"
    top = columns.item(by_name["city"], header.index("Most common")).text()
    assert top == "Oslo (10), Lima (10), Pune (10)"
    [button] = view.action_buttons
    assert button.text() == "Open report"
    view.opener = lambda url: opened.append(url.toLocalFile()) or True
    with running.qtbot.waitSignal(running.window.detail.link_opened, timeout=WAIT) as sig:
        button.click()
    assert sig.args == [str(tmp_path / "sales.html")]
    assert not view.problem.isVisibleTo(view)


@pytest.mark.slow
def test_100000_output_lines_end_on_the_last_one_and_save_writes_all(running, tmp_path):
    tid = running.run_task("process.run", program="seq", args=["1", "100000"])
    w = running.window
    w.select_task(tid)
    running.wait_state(tid, "succeeded")
    out = w.detail.output
    last = lambda: out.document().lastBlock().text()  # noqa: E731
    running.qtbot.waitUntil(lambda: last() == "100000", timeout=WAIT)
    bar = out.verticalScrollBar()
    assert bar.value() == bar.maximum()  # it followed to the end
    kept = out.blockCount()
    assert w.detail.output_notice.text() == f"Showing the last {kept:,} of 100,000 lines"
    assert out.document().firstBlock().text() == str(100_000 - kept + 1)

    # program: exit code + line count + the last lines of output
    assert _result_cell(running, tid) == "exit 0 · 100,000 lines"
    view = _shown(running, tid)
    assert view.field_widgets["exit_code"].text() == "0"
    assert view.output_tail.toPlainText().splitlines()[-1] == "100000"

    # Save output…: a non-blocking dialog, then every line, from the event log
    target = tmp_path / "seq.txt"
    w.detail.save_output_button.click()
    dialog = w.detail.save_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.selectFile(str(target))
    dialog.accept()
    running.qtbot.waitUntil(lambda: w.detail.output_notice.text().startswith("Saved"),
                            timeout=WAIT)  # fmt: skip
    lines = target.read_text().splitlines()
    assert len(lines) == 100_000 and lines[0] == "1" and lines[-1] == "100000"
    assert w.status_message.text() == f"Saved 100,000 lines to {target}"


def test_a_result_without_a_display_is_a_tree_with_copy(qtbot):
    from examples.herald_example_tasks import count_words  # a plug-in without a display

    class Ctx:
        def progress(self, *a, **k):
            pass

        def output(self, *a, **k):
            pass

    result = {**count_words(Ctx(), text="one two three"), "nested": {"a": [1, 2, {"b": "c"}]}}
    view = ResultView()
    qtbot.addWidget(view)
    view.show_result(result, None)
    tree = view.tree
    assert isinstance(tree, QTreeWidget)
    top = {tree.topLevelItem(i).text(0): tree.topLevelItem(i)
           for i in range(tree.topLevelItemCount())}  # fmt: skip
    assert top["words"].text(1) == "3"
    assert top["nested"].text(1) == "{1 keys}"
    assert top["nested"].child(0).text(1) == "[3 items]"
    from desktop.ui.result_view import tree_value_text

    assert json.loads(tree_value_text(top["nested"])) == {"a": [1, 2, {"b": "c"}]}
    view.copy_button.click()
    from PySide6.QtGui import QGuiApplication

    assert '"nested"' in QGuiApplication.clipboard().text()


def test_the_output_tab_follows_unless_scrolled_up_and_counts_past_the_cap(qtbot):
    from desktop.ui.detail_pane import DetailPane
    from services.core.events import Event, EventType

    pane = DetailPane()
    qtbot.addWidget(pane)
    pane.resize(600, 400)
    pane.show()
    pane.tabs.setCurrentIndex(1)
    queued = Event(1, "t1", "", EventType.QUEUED, 0.0, 0, {"name": "process.run", "args": {}})
    task = {"id": "t1", "task": "process.run", "state": "running", "args": {}}
    cap = 300  # what a model that keeps 300 lines hands over
    lines = [str(i) for i in range(1, 1001)]
    bar = pane.output.verticalScrollBar()

    def feed(upto: int) -> None:
        kept = lines[max(0, upto - cap):upto]
        pane.show_task(task, "Run a program", [queued], kept, upto - len(kept))

    feed(200)
    assert bar.value() == bar.maximum() > 0 and pane.output_following()
    feed(600)  # past the model's cap: the new lines still arrive, at the end
    assert pane.output.document().lastBlock().text() == "600"
    assert bar.value() == bar.maximum()
    kept = pane.output.blockCount()
    assert pane.output_notice.text() == f"Showing the last {kept:,} of 600 lines"
    bar.setValue(10)  # the user scrolls up to read: it stays there
    assert not pane.output_following()
    feed(700)
    assert bar.value() == 10 and pane.output.document().lastBlock().text() == "700"
    bar.setValue(bar.maximum())  # back to the end: it follows again
    feed(1000)
    assert bar.value() == bar.maximum() and pane.output.document().lastBlock().text() == "1000"
