"""How results read (services.core.resultview): the summary templates, typed values, fields,
tables and the text `herald show` prints, and the built-in tasks' displays on the results
their real functions return."""

from __future__ import annotations

import hashlib
import json

import pytest

from services.core import resultview as rv
from services.tasks.builtin.files import archive, checksum
from services.tasks.builtin.process import run
from services.tasks.builtin.report import csv_report
from services.tasks.catalog import Catalog, load_catalog
from services.tasks.context import TaskContext


@pytest.fixture(scope="module")
def displays() -> dict:
    return {s.name: s.display for s in load_catalog()}


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (49283078, "47.0 MiB"), (5 * 1024**3, "5.0 GiB"), (2**60, "1024.0 PiB"),
])  # fmt: skip
def test_bytes_read_in_binary_units(n, text):
    assert rv.format_bytes(n) == text
    assert rv.format_value(n, "bytes") == text


@pytest.mark.parametrize(("value", "kind", "text"), [
    (0.25, "ratio", "25.0 %"), (1.0, "ratio", "100.0 %"),
    (12345, "count", "12,345"), ([1, 2, 3], "count", "3"),
    (65, "seconds", "1 min 5 s"), (0.5, "seconds", "0.5 s"),
    (3.14159265, "number", "3.14159"), (1234567, "number", "1,234,567"), (2.0, "number", "2"),
    (-15, "code", "-15"), (1, "output", "1 line"), (100000, "output", "100,000 lines"),
    (["a", "b"], "list", "a, b"), ("47 bytes", "bytes", "47 bytes"),  # not a number: as is
    (True, "number", "yes"), ({"a": 1}, "text", '{"a": 1}'),
])  # fmt: skip
def test_typed_values(value, kind, text):
    assert rv.format_value(value, kind) == text


def test_summary_templates_pick_the_first_that_fits_and_format_each_key():
    display = rv.validate_display({"summary": [
        "{files:count:file} · {bytes:bytes} · {digest:short}", "{size:bytes}"]})
    folder = {"files": 1, "bytes": 2048, "digest": "0123456789abcdef"}
    assert rv.summary(folder, display) == "1 file · 2.0 KiB · 0123456789ab…"
    assert rv.summary({**folder, "files": 2}, display).startswith("2 files")
    assert rv.summary({"size": 10}, display) == "10 B"
    # no template fits: as before, the name of a path, or compact JSON
    assert rv.summary({"path": "/a/b/report.html"}, display) == "report.html"
    assert rv.summary({"x": 1}, None) == '{"x": 1}'
    assert rv.summary(42, None) == "42"
    assert rv.summary("first\nsecond", None) == "first …"
    assert rv.summary(None, display) == ""


def test_a_ratio_of_two_keys_and_a_cut_summary():
    display = rv.validate_display({"summary": "{out/in:ratio} of {path:name}"})
    assert rv.summary({"out": 1, "in": 4, "path": "/x/y.zip"}, display) == "25.0 % of y.zip"
    assert rv.summary({"out": 1, "in": 0, "path": "/x/y.zip"}, display) == "— of y.zip"
    long = rv.summary({"out": 1, "in": 4, "path": "/" + "x" * 300}, display, width=30)
    assert len(long) == 30 and long.endswith("…")


@pytest.mark.parametrize("bad", [
    [], {"summary": 3}, {"summary": "{}"}, {"summary": "{a:nope}"}, {"summary": "{a"},
    {"fields": [{"label": "no key"}]}, {"fields": [{"key": "a", "type": "colour"}]},
    {"fields": [{"key": "a", "type": "table"}]},
    {"fields": [{"key": "a", "type": "table", "columns": [
        {"key": "b", "type": "table", "columns": [{"key": "c"}]}]}]},
    {"fields": [{"key": "a", "of": "b"}]}, {"fields": [{"key": "a", "colour": 1}]},
    {"actions": [{"label": "Open"}]}, {"what": 1},
])  # fmt: skip
def test_bad_displays_are_refused_in_words(bad):
    with pytest.raises(ValueError, match="display"):
        rv.validate_display(bad)


def test_a_task_with_a_bad_display_is_not_registered():
    catalog = Catalog()
    with pytest.raises(ValueError, match="task t.bad: display field 'a': unknown type"):
        catalog.task("t.bad", display={"fields": [{"key": "a", "type": "colour"}]})(
            lambda ctx: None)
    assert "t.bad" not in catalog


def test_fields_skip_what_the_result_lacks_and_tables_cap_their_rows():
    display = rv.validate_display({"fields": [
        {"key": "digest", "type": "digest"}, {"key": "missing"}, {"key": "empty", "type": "list"},
        {"key": "rows", "label": "Rows", "type": "table", "columns": [
            {"key": "name"}, {"key": "size", "type": "bytes"}]},
    ], "actions": [{"key": "path", "label": "Open it"}, {"key": "nothing", "label": "No"}]})
    records = [{"name": f"f{i}", "size": i} for i in range(rv.MAX_TABLE_ROWS + 5)]
    view = rv.render({"digest": "ab", "empty": [], "rows": records, "path": "/p"}, display)
    assert view.declared
    assert [(f.key, f.label, f.type) for f in view.fields] == [
        ("digest", "Digest", rv.FieldType.DIGEST), ("rows", "Rows", rv.FieldType.TABLE)]
    table = view.fields[1]
    assert [c.label for c in table.columns] == ["Name", "Size"]
    assert len(table.rows) == rv.MAX_TABLE_ROWS and table.total_rows == rv.MAX_TABLE_ROWS + 5
    assert table.rows[2] == ("f2", "2 B") and table.text == "1,005 rows"
    assert view.actions == (rv.Action("Open it", "/p"),)
    assert not rv.render({"a": 1}, None).declared


def test_the_builtin_displays_are_json_and_served_with_the_catalog(displays):
    for name in ("files.checksum", "files.archive", "report.csv", "process.run"):
        assert displays[name] is not None
        assert json.loads(json.dumps(displays[name])) == displays[name]
    spec = next(s for s in load_catalog() if s.name == "files.checksum")
    assert spec.to_json()["display"] == displays["files.checksum"]


def ctx() -> TaskContext:
    return TaskContext(progress_interval=0)


def test_checksum_reads_digest_files_size_and_a_manifest(displays, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"a" * 2048)
    (tmp_path / "d" / "b").write_bytes(b"b")
    result = checksum(ctx(), str(tmp_path / "d"))
    view = rv.render(result, displays["files.checksum"])
    assert view.summary == f"2 files · 2.0 KiB · {result['digest'][:12]}…"
    fields = {f.key: f for f in view.fields}
    assert fields["digest"].text == result["digest"] and fields["digest"].type == "digest"
    assert fields["path"].type == "path" and fields["bytes"].text == "2.0 KiB"
    assert fields["manifest"].rows == (
        ("a", "2.0 KiB", hashlib.sha256(b"a" * 2048).hexdigest()),
        ("b", "1 B", hashlib.sha256(b"b").hexdigest()))
    assert "symlinks" not in fields and "skipped" not in fields  # empty: not shown
    lines = rv.text_lines(view)
    assert f"Digest     {result['digest']}" in lines and "Size       2.0 KiB" in lines
    assert lines[lines.index("Manifest (2 rows):") + 1].split() == ["File", "Size", "Digest"]
    one = checksum(ctx(), str(tmp_path / "d" / "a"))
    assert rv.summary(one, displays["files.checksum"]) == f"2.0 KiB · {one['digest'][:12]}…"


def test_archive_reads_path_size_and_ratio(displays, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "zeros").write_bytes(bytes(100_000))
    result = archive(ctx(), str(src), str(tmp_path / "out.zip"))
    view = rv.render(result, displays["files.archive"])
    ratio = f"{result['bytes_out'] / result['bytes_in'] * 100:.1f} %"
    assert view.summary == (f"out.zip · {rv.format_bytes(result['bytes_out'])} ({ratio} of "
                            "97.7 KiB)")  # fmt: skip
    fields = {f.label: f for f in view.fields}
    assert fields["Ratio"].text == ratio and fields["Archive"].type == "path"
    assert view.actions == (rv.Action("Open archive", str(tmp_path / "out.zip")),)


def test_csv_report_reads_a_column_table_and_open_report(displays, tmp_path):
    src = tmp_path / "sales.csv"
    src.write_text("city,amount\nOslo,1.5\nLima,2\nOslo,\n")
    result = csv_report(ctx(), str(src))
    view = rv.render(result, displays["report.csv"])
    assert view.summary == "3 rows · 2 columns · sales.html"
    table = next(f for f in view.fields if f.key == "columns")
    names = [c.label for c in table.columns]
    by_col = [dict(zip(names, row, strict=True)) for row in table.rows]
    assert by_col[0]["Column"] == "city" and by_col[0]["Most common"] == "Oslo (2), Lima (1)"
    assert by_col[1]["Type"] == "number" and by_col[1]["Missing"] == "1"
    assert by_col[1]["Min"] == "1.5" and by_col[1]["Max"] == "2"
    assert view.actions == (rv.Action("Open report", str(tmp_path / "sales.html")),)


def test_program_reads_exit_code_and_line_count(displays, tmp_path):
    result = run(ctx(), "seq", ["1", "3"], str(tmp_path))
    view = rv.render(result, displays["process.run"])
    assert view.summary == "exit 0 · 3 lines"
    assert [(f.label, f.text) for f in view.fields] == [("Exit code", "0"),
                                                        ("Output", "3 lines")]
