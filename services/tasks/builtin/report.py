"""The CSV report task: one streaming pass over a CSV file, one self-contained HTML page.

The first row is the header. Each column gets an inferred type, in this order of preference:
"boolean" (true/false/yes/no), "integer", "number", "date" (ISO 8601 dates or date-times),
"text"; a column with no values at all is "empty". Cells that are blank or say NA, N/A,
null, none or nan (any case) count as missing. Integers with a leading zero ("007") are
codes, so they count as text. Numbers get min, max and mean; dates their earliest and latest
(by ISO text); text and boolean columns their five most common values. To bound memory,
distinct values are counted exactly up to MAX_DISTINCT per column; past that the most common
values are those among the first MAX_DISTINCT distinct ones and `distinct` is None.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import re
from collections import Counter
from datetime import datetime
from typing import Any

from services.core.errors import TaskFailure
from services.tasks.builtin.files import AtomicFile, display_path, format_bytes, io_failure
from services.tasks.catalog import Param, ParamType, PathKind, task
from services.tasks.context import TaskContext

DELIMITERS = {"auto": None, "comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|",
              "colon": ":", "space": " "}  # fmt: skip
DELIMITER_NAMES = {v: k for k, v in DELIMITERS.items() if v is not None}
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")  # tried in order; latin-1 never fails
SNIFF_BYTES = 64 * 1024
ROWS_PER_REPORT = 1000  # rows between two progress reports (each is a cancellation checkpoint)
PREVIEW_ROWS = 20
PREVIEW_COLUMNS = 50
CELL_CHARS = 200  # longer cells are cut in the preview and in the value counts
TOP_VALUES = 5
MAX_DISTINCT = 50_000

MISSING = frozenset({"", "na", "n/a", "null", "none", "nan"})
BOOLEANS = frozenset({"true", "false", "yes", "no"})
_INTEGER = re.compile(r"[+-]?(?:0|[1-9]\d*)", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    re.ASCII,
)


class _Column:
    """What one pass learns about one column."""

    def __init__(self, name: str, missing: int = 0) -> None:
        self.name = name
        self.missing = missing
        self.count = 0
        self.maybe_boolean = self.maybe_integer = self.maybe_number = self.maybe_date = True
        self.low: Any = None
        self.high: Any = None
        self.total: float = 0
        self.first_date: str | None = None
        self.last_date: str | None = None
        self.values: Counter[str] = Counter()
        self.capped = False

    def add(self, cell: str) -> None:
        value = cell.strip()
        if value.lower() in MISSING:
            self.missing += 1
            return
        self.count += 1
        if self.maybe_boolean and value.lower() not in BOOLEANS:
            self.maybe_boolean = False
        if self.maybe_number:
            self._add_number(value)
        if self.maybe_date:
            self._add_date(value)
        key = value[:CELL_CHARS]
        if key in self.values or len(self.values) < MAX_DISTINCT:
            self.values[key] += 1
        else:
            self.capped = True

    def _add_number(self, value: str) -> None:
        n: float
        if self.maybe_integer and _INTEGER.fullmatch(value):
            n = int(value)
        elif _NUMBER.fullmatch(value):
            n = float(value)
            self.maybe_integer = False
            if not math.isfinite(n):  # "1e999": not a number a report can average
                self.maybe_number = self.maybe_integer = False
                return
        else:
            self.maybe_number = self.maybe_integer = False
            return
        self.total += n
        if self.low is None or n < self.low:
            self.low = n
        if self.high is None or n > self.high:
            self.high = n

    def _add_date(self, value: str) -> None:
        if not _DATE.fullmatch(value):
            self.maybe_date = False
            return
        try:
            datetime.fromisoformat(value)
        except ValueError:  # shaped like a date but not one (2024-13-45)
            self.maybe_date = False
            return
        if self.first_date is None or value < self.first_date:
            self.first_date = value
        if self.last_date is None or value > self.last_date:
            self.last_date = value

    @property
    def type(self) -> str:
        if self.count == 0:
            return "empty"
        if self.maybe_boolean:
            return "boolean"
        if self.maybe_integer and self.maybe_number:
            return "integer"
        if self.maybe_number:
            return "number"
        if self.maybe_date:
            return "date"
        return "text"

    def summary(self) -> dict[str, Any]:
        t = self.type
        out: dict[str, Any] = {
            "name": self.name,
            "type": t,
            "missing": self.missing,
            "count": self.count,
            "distinct": None if self.capped else len(self.values),
        }
        if t == "integer":
            out.update(min=int(self.low), max=int(self.high), mean=self.total / self.count)
        elif t == "number":
            out.update(min=float(self.low), max=float(self.high), mean=self.total / self.count)
        elif t == "date":
            out.update(min=self.first_date, max=self.last_date)
        elif t in ("text", "boolean"):
            out["top"] = [{"value": v, "count": c}
                          for v, c in self.values.most_common(TOP_VALUES)]  # fmt: skip
        return out


class _Analysis:
    """The result of one pass: columns, row counts and the preview."""

    def __init__(self, encoding: str, delimiter: str) -> None:
        self.encoding = "utf-8" if encoding == "utf-8-sig" else encoding  # BOM or not
        self.delimiter = delimiter
        self.columns: list[_Column] = []
        self.rows = 0
        self.ragged_rows = 0
        self.preview: list[list[str]] = []


def _unique_names(header: list[str]) -> list[str]:
    """Header cells as column names: blanks get "column N", repeats get " (2)", " (3)"."""
    names: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(header):
        base = cell.strip() or f"column {i + 1}"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base} ({k})"
        seen.add(name)
        names.append(name)
    return names


def _sniff(sample: str) -> str:
    """The delimiter that the sample seems to use; a comma when it cannot tell."""
    cut = sample.rfind("\n")
    if cut > 0:
        sample = sample[:cut]  # a last line cut in the middle would mislead the sniffer
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|:").delimiter
    except csv.Error:
        return ","


def _analyse(ctx: TaskContext, path: str, encoding: str, delimiter: str | None) -> _Analysis:
    """One pass over the file in this encoding.

    Raises:
        UnicodeDecodeError: the file is not in this encoding (the caller tries the next).
        TaskFailure: an I/O error, a malformed file or an empty one.
    """
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as raw:
            if delimiter is None:
                delimiter = _sniff(raw.read(SNIFF_BYTES).decode(encoding, "replace"))
                raw.seek(0)
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")
            reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True)
            result = _Analysis(encoding, delimiter)
            try:
                _read_rows(ctx, reader, result, raw, size)
            except csv.Error as exc:
                raise TaskFailure(f"{display_path(name)}, line {reader.line_num}: {exc}",
                                  code="bad_csv") from None  # fmt: skip
            finally:
                text.detach()  # `raw`'s own block closes the file
    except OSError as exc:
        raise io_failure(exc, display_path(path)) from None
    if not result.columns:
        raise TaskFailure(f"{display_path(path)} is empty: no header row", code="empty_file")
    return result


def _read_rows(ctx: TaskContext, reader: Any, result: _Analysis, raw: io.BufferedReader,
               size: int) -> None:  # fmt: skip
    columns = result.columns
    for row in reader:
        if not row:
            continue  # a blank line
        if not columns:
            columns.extend(_Column(n) for n in _unique_names(row))
            continue
        result.rows += 1
        if len(row) != len(columns):
            result.ragged_rows += 1
            while len(row) > len(columns):  # cells beyond the header: new, unnamed columns
                columns.append(_Column(f"column {len(columns) + 1}", missing=result.rows - 1))
        for col, cell in zip(columns, row, strict=False):
            col.add(cell)
        for col in columns[len(row):]:
            col.missing += 1
        if len(result.preview) < PREVIEW_ROWS:
            result.preview.append([c[:CELL_CHARS] for c in row[:PREVIEW_COLUMNS]])
        if result.rows % ROWS_PER_REPORT == 0:
            done = raw.tell()
            ctx.progress(done / size if size else None,
                         f"{result.rows:,} rows · {format_bytes(done)} of "
                         f"{format_bytes(size)}")  # fmt: skip


# ------------------------------------------------------------------ the HTML page

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d2330;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .5em}
.meta{color:#5a6275}
table{border-collapse:collapse;margin:.3em 0}
th,td{border:1px solid #d5d9e2;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef1f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.t{display:inline-block;padding:0 .4em;border-radius:.3em;background:#e3ecfb;font-size:.9em}
.preview td{max-width:24em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
ol{margin:0;padding-left:1.3em}
""".strip()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.6g}"


def _details(col: dict[str, Any]) -> str:
    t = col["type"]
    if t in ("integer", "number"):
        return (f"min {_e(_num(col['min']))} · max {_e(_num(col['max']))} · "
                f"mean {_e(_num(col['mean']))}")  # fmt: skip
    if t == "date":
        return f"{_e(col['min'])} … {_e(col['max'])}"
    if col.get("top"):
        items = "".join(f"<li>{_e(v['value'])} <span class=meta>({v['count']:,})</span></li>"
                        for v in col["top"])  # fmt: skip
        return f"<ol>{items}</ol>"
    return ""


def render_html(source: str, analysis: _Analysis, columns: list[dict[str, Any]]) -> str:
    """The report as one HTML page: inline CSS, no scripts, nothing loaded from elsewhere."""
    name = _e(os.path.basename(source))
    delim = DELIMITER_NAMES.get(analysis.delimiter, repr(analysis.delimiter))
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Belt and braces: even if a cell slipped through unescaped, nothing could load.
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Report on {name}</title><style>{_CSS}</style></head><body>",
        f"<h1>Report on {name}</h1>",
        f"<p class=meta>{_e(display_path(source))}<br>{_plural(analysis.rows, 'row')} · "
        f"{_plural(len(columns), 'column')} · {_e(analysis.encoding)} · delimiter {_e(delim)}"
        + (f" · {_plural(analysis.ragged_rows, 'row')} with a different number of cells"
           if analysis.ragged_rows else "")
        + "</p>",
        "<h2>Columns</h2><table><thead><tr><th>Column</th><th>Type</th><th>Values</th>"
        "<th>Missing</th><th>Distinct</th><th>Summary</th></tr></thead><tbody>",
    ]
    for col in columns:
        distinct = "many" if col["distinct"] is None else f"{col['distinct']:,}"
        out.append(
            f"<tr><td>{_e(col['name'])}</td><td><span class=t>{_e(col['type'])}</span></td>"
            f"<td class=n>{col['count']:,}</td><td class=n>{col['missing']:,}</td>"
            f"<td class=n>{distinct}</td><td>{_details(col)}</td></tr>"
        )
    out.append("</tbody></table>")
    shown = analysis.preview
    out.append(f"<h2>First {len(shown)} rows</h2><table class=preview><thead><tr>")
    names = [c["name"] for c in columns[:PREVIEW_COLUMNS]]
    out.append("".join(f"<th>{_e(n)}</th>" for n in names) + "</tr></thead><tbody>")
    for row in shown:
        cells = row + [""] * (len(names) - len(row))
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    if len(columns) > PREVIEW_COLUMNS:
        out.append(f"<p class=meta>The preview shows the first {PREVIEW_COLUMNS} columns.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ------------------------------------------------------------------ the task


def default_destination(source: str) -> str:
    """Next to the source, with an .html suffix (never the source itself)."""
    dest = os.path.splitext(source)[0] + ".html"
    return dest if dest != source else source + ".html"


@task(
    "report.csv",
    title="CSV report",
    description=(
        "Reads a CSV file once and writes a self-contained HTML report next to it (or to "
        "the destination): the row count and, for each column, its inferred type (integer, "
        "number, boolean, date, text), missing values, min/max/mean of numbers and the most "
        "common values of text, then a preview of the first rows. The first row is the "
        "header. UTF-8 (with or without BOM) is tried first, then Windows-1252, then Latin-1."
    ),
    params=[
        Param("source", ParamType.PATH, title="CSV file", path_kind=PathKind.FILE,
              description="The CSV file to describe."),  # fmt: skip
        Param("destination", ParamType.PATH, title="Report", path_kind=PathKind.NEW_FILE,
              default=None, description="The HTML file to write; by default next to the "
              "CSV file, with an .html suffix."),  # fmt: skip
        Param("delimiter", ParamType.CHOICE, title="Delimiter", default="auto",
              choices=tuple(DELIMITERS), description="The cell separator; auto guesses it."),
        Param("overwrite", ParamType.BOOLEAN, title="Overwrite", default=False,
              description="Replace the report file if it exists."),  # fmt: skip
    ],
    path_defaults={"destination": lambda args: default_destination(args["source"])},
    display={
        "summary": "{rows:count:row} · {columns:count:column} · {path:name}",
        "fields": [
            {"key": "path", "label": "Report", "type": "path"},
            {"key": "source", "label": "CSV file", "type": "path"},
            {"key": "rows", "label": "Rows", "type": "count"},
            {"key": "ragged_rows", "label": "Ragged rows", "type": "count"},
            {"key": "encoding", "label": "Encoding"},
            {"key": "delimiter", "label": "Delimiter"},
            {"key": "columns", "label": "Columns", "type": "table", "columns": [
                {"key": "name", "label": "Column"},
                {"key": "type", "label": "Type"},
                {"key": "missing", "label": "Missing", "type": "count"},
                {"key": "distinct", "label": "Distinct", "type": "count"},
                {"key": "min", "label": "Min", "type": "number"},
                {"key": "max", "label": "Max", "type": "number"},
                {"key": "mean", "label": "Mean", "type": "number"},
                {"key": "top", "label": "Most common", "type": "list",
                 "item": "{value} ({count})"},
            ]},
        ],
        "actions": [{"key": "path", "label": "Open report"}],
    },
)
def csv_report(ctx: TaskContext, source: str, destination: str | None = None,
               delimiter: str = "auto", overwrite: bool = False) -> dict[str, Any]:  # fmt: skip
    """Describe a CSV file in a self-contained HTML report."""
    destination = destination or default_destination(source)
    shown = display_path(destination)
    if os.path.realpath(destination) == os.path.realpath(source):
        raise TaskFailure("the report would replace the CSV file itself; choose another "
                          "destination", code="destination_is_source")  # fmt: skip
    if os.path.lexists(destination) and not overwrite:
        raise TaskFailure(f"{shown} already exists (set overwrite to replace it)",
                          code="destination_exists")  # fmt: skip
    if os.path.isdir(destination):
        raise TaskFailure(f"{shown} is a folder; give a file name", code="destination_is_folder")

    for encoding in ENCODINGS:
        try:
            analysis = _analyse(ctx, source, encoding, DELIMITERS[delimiter])
            break
        except UnicodeDecodeError:
            ctx.output(f"{display_path(os.path.basename(source))} is not {encoding}; "
                       "reading it again")  # fmt: skip
    else:  # pragma: no cover - latin-1 decodes any byte
        raise TaskFailure("could not decode the file", code="bad_encoding")

    columns = [c.summary() for c in analysis.columns]
    page = render_html(source, analysis, columns).encode("utf-8")
    with AtomicFile(destination, overwrite=overwrite, ctx=ctx) as out:
        assert out.file is not None
        try:
            out.file.write(page)
        except OSError as exc:
            raise io_failure(exc, shown) from None
        out.commit()
    ctx.progress(1.0, f"{analysis.rows:,} rows · {len(columns)} columns")
    return {
        "path": shown,
        "source": display_path(source),
        "rows": analysis.rows,
        "encoding": analysis.encoding,
        "delimiter": analysis.delimiter,
        "ragged_rows": analysis.ragged_rows,
        "columns": columns,
    }
