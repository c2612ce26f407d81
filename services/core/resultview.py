"""How a task's result reads: the rules every client shares (desktop, CLI, a browser page).

A task declares, in its catalog registration, a *display*: a small JSON-serialisable spec
served with the catalog (GET /api/catalog), so every client shows a result the same way:

    {
      "summary": ["{files:count:file} · {bytes:bytes} · {digest:short}",
                  "{size:bytes} · {digest:short}"],
      "fields": [
        {"key": "digest", "label": "Digest", "type": "digest"},
        {"key": "path", "label": "Folder", "type": "path"},
        {"key": "bytes_out", "of": "bytes_in", "label": "Ratio", "type": "ratio"},
        {"key": "manifest", "label": "Manifest", "type": "table",
         "columns": [{"key": "path", "label": "File", "type": "path"},
                     {"key": "size", "label": "Size", "type": "bytes"}]},
      ],
      "actions": [{"label": "Open report", "key": "path"}],
    }

`summary` is one template or a list of them: the first whose keys the result all has is
used (a checksum of a file and one of a folder return different keys). A template names
keys as `{key}` or `{key:type}`; `{a/b:ratio}` divides two keys; `{key:count:file}` says
"1 file" / "3 files"; `{digest:short}` is the first 12 characters; `{path:name}` is the last
part of a path. Fields absent from a result are left out. Without a display (a plug-in
that declares none) a result reads as before: a short summary and its JSON as a tree.

Standard library only: `render(result, display)` returns plain dataclasses.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.retry import format_seconds

__all__ = ["FieldType", "Field", "Action", "ResultView", "validate_display", "render",
           "summary", "format_value", "format_bytes", "text_lines", "MAX_TABLE_ROWS"]  # fmt: skip

ELLIPSIS = "…"
SHORT_DIGEST = 12
MAX_TABLE_ROWS = 1000  # rows a table field keeps; the rest are counted (a 100k-file manifest)
MAX_TEMPLATE = 200


class FieldType(StrEnum):
    """What a value is, so each client shows it the right way."""

    TEXT = "text"
    PATH = "path"  # a file or folder: a link that opens it, and one that shows its folder
    DIGEST = "digest"  # a hex digest: monospace, copyable
    BYTES = "bytes"  # "47.0 MiB"
    SECONDS = "seconds"  # "1 min 5 s"
    COUNT = "count"  # "12,345" (a list counts its items)
    RATIO = "ratio"  # a fraction as "12.5 %" (or key / of)
    NUMBER = "number"  # "3.14159", "1,234"
    CODE = "code"  # an exit code: "0"
    TABLE = "table"  # a list of records: a table with named columns
    LIST = "list"  # a list of values: "a, b, c" (each item through `item`, a template)
    OUTPUT = "output"  # the task's output lines (the value is their count)
    JSON = "json"  # anything: a tree


_SCALAR_TYPES = frozenset(FieldType) - {FieldType.TABLE}
_SPEC_KEYS = frozenset({"summary", "fields", "actions"})
_FIELD_KEYS = frozenset({"key", "label", "type", "of", "columns", "item", "unit"})
_ACTION_KEYS = frozenset({"key", "label"})


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    type: FieldType = FieldType.TEXT
    item: str | None = None


@dataclass(frozen=True)
class Field:
    """One shown field of a result.

    `text` is the value as people read it; `value` the raw value (a path, a digest: what a
    copy or an open uses). A table has `columns` and `rows` (each row the cells' texts, as
    many as MAX_TABLE_ROWS) and `total_rows` (all the records).
    """

    key: str
    label: str
    type: FieldType
    text: str
    value: Any = None
    columns: tuple[Column, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    total_rows: int = 0


@dataclass(frozen=True)
class Action:
    """A button for a path of the result ("Open report")."""

    label: str
    path: str


@dataclass(frozen=True)
class ResultView:
    """A result as it reads: `summary` for a table cell; `fields` and `actions` for a detail
    view. `declared` is False when the task has no display (show the JSON as a tree)."""

    summary: str
    fields: tuple[Field, ...] = ()
    actions: tuple[Action, ...] = ()
    declared: bool = False


# ------------------------------------------------------------------ the spec


def validate_display(spec: Any) -> dict[str, Any]:
    """A display spec checked and normalised (every field with a label and a type).

    Raises:
        ValueError: what is wrong with it, in words.
    """
    if not isinstance(spec, dict):
        raise ValueError("display must be a dict")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"display has unknown keys: {', '.join(sorted(unknown))}")
    templates = spec.get("summary", [])
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise ValueError("display summary must be a template or a list of templates")
    for t in templates:
        _check_template(t)
    fields = spec.get("fields", [])
    if not isinstance(fields, list):
        raise ValueError("display fields must be a list")
    out_fields = [_check_field(f, table_ok=True) for f in fields]
    actions = spec.get("actions", [])
    if not isinstance(actions, list):
        raise ValueError("display actions must be a list")
    out_actions = []
    for a in actions:
        if not isinstance(a, dict) or set(a) - _ACTION_KEYS or not isinstance(
                a.get("key"), str) or not isinstance(a.get("label"), str):  # fmt: skip
            raise ValueError("a display action is {'key': ..., 'label': ...}")
        out_actions.append({"key": a["key"], "label": a["label"]})
    normal = {"summary": templates, "fields": out_fields, "actions": out_actions}
    json.dumps(normal)  # JSON-serialisable, as the catalog serves it
    return normal


def _check_field(f: Any, *, table_ok: bool) -> dict[str, Any]:
    if not isinstance(f, dict) or not isinstance(f.get("key"), str) or not f["key"]:
        raise ValueError("a display field is a dict with a 'key'")
    unknown = set(f) - _FIELD_KEYS
    if unknown:
        raise ValueError(f"display field {f['key']!r} has unknown keys: "
                         f"{', '.join(sorted(unknown))}")  # fmt: skip
    try:
        kind = FieldType(f.get("type", "text"))
    except ValueError:
        raise ValueError(f"display field {f['key']!r}: unknown type {f.get('type')!r} "
                         f"(one of {', '.join(t.value for t in FieldType)})") from None
    out: dict[str, Any] = {"key": f["key"], "label": str(f.get("label") or _label(f["key"])),
                           "type": kind.value}  # fmt: skip
    if "of" in f:
        if kind is not FieldType.RATIO or not isinstance(f["of"], str):
            raise ValueError(f"display field {f['key']!r}: 'of' is for a ratio, a key")
        out["of"] = f["of"]
    if "item" in f:
        if not isinstance(f["item"], str):
            raise ValueError(f"display field {f['key']!r}: 'item' is a template")
        _check_template(f["item"])
        out["item"] = f["item"]
    if kind is FieldType.TABLE:
        if not table_ok:
            raise ValueError(f"display column {f['key']!r}: a table in a table")
        cols = f.get("columns")
        if not isinstance(cols, list) or not cols:
            raise ValueError(f"display field {f['key']!r}: a table needs its columns")
        out["columns"] = [_check_field(c, table_ok=False) for c in cols]
    elif "columns" in f:
        raise ValueError(f"display field {f['key']!r}: only a table has columns")
    return out


def _check_template(template: str) -> None:
    if len(template) > MAX_TEMPLATE:
        raise ValueError("a display template is at most 200 characters")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"display template {template!r}: {exc}") from None
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if not name:
            raise ValueError(f"display template {template!r}: {{}} needs a key")
        kind = (spec or "text").split(":", 1)[0]
        if kind not in _TEMPLATE_KINDS:
            raise ValueError(f"display template {template!r}: unknown format {kind!r}")


_TEMPLATE_KINDS = frozenset({t.value for t in _SCALAR_TYPES} | {"short", "name"})


# ------------------------------------------------------------------ formatting


def format_bytes(n: float) -> str:
    """A byte count in binary units: "512 B", "1.5 KiB", "47.0 MiB"."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1023.95 or unit == "PiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.6g}" if abs(value) >= 1e-4 else f"{value:.3g}"
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return _number(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_value(value: Any, kind: FieldType | str, *, item: str | None = None,
                 noun: str | None = None) -> str:  # fmt: skip
    """`value` as people read a `kind` of value ("47.0 MiB", "12.5 %", "3 files").

    A value that is not of its kind (a text where bytes were promised) reads as itself.
    """
    kind = FieldType(kind)
    if kind is FieldType.BYTES and _is_number(value):
        return format_bytes(value)
    if kind is FieldType.SECONDS and _is_number(value):
        return format_seconds(value)
    if kind in (FieldType.COUNT, FieldType.OUTPUT):
        if isinstance(value, list | tuple | dict):
            value = len(value)
        if isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
            if noun:
                text += f" {noun}" + ("" if value == 1 else "s")
            elif kind is FieldType.OUTPUT:
                text += " line" + ("" if value == 1 else "s")
            return text
    if kind is FieldType.RATIO and _is_number(value):
        return f"{value * 100:.1f} %"
    if kind in (FieldType.NUMBER, FieldType.CODE) and _is_number(value):
        return str(value) if kind is FieldType.CODE else _number(value)
    if kind is FieldType.LIST and isinstance(value, list):
        parts = [(fill(item, v) if item and isinstance(v, dict) else None) or _text(v)
                 for v in value]  # fmt: skip
        return ", ".join(parts)
    if kind is FieldType.TABLE and isinstance(value, list):
        return f"{len(value):,} row" + ("" if len(value) == 1 else "s")
    if kind is FieldType.JSON:
        return _text(value)
    return _text(value)


def _lookup(result: Any, key: str) -> tuple[bool, Any]:
    """(present, value) of `key` in `result`; "a/b" is the ratio of two numbers."""
    if not isinstance(result, dict):
        return False, None
    if "/" in key:
        top, _, bottom = key.partition("/")
        a, b = result.get(top), result.get(bottom)
        if not (_is_number(a) and _is_number(b)):
            return False, None
        return True, (a / b if b else None)
    if key not in result or result[key] is None:
        return False, None
    return True, result[key]


def _format_part(value: Any, spec: str) -> str:
    kind, _, noun = (spec or "text").partition(":")
    if kind == "short":
        text = _text(value)
        return text[:SHORT_DIGEST] + (ELLIPSIS if len(text) > SHORT_DIGEST else "")
    if kind == "name":
        text = _text(value).replace("\\", "/").rstrip("/") or _text(value)
        return text.rsplit("/", 1)[-1]
    if value is None:
        return "—"
    return format_value(value, kind, noun=noun or None)


def fill(template: str, result: Any) -> str | None:
    """`template` filled from `result`; None if a key it names is missing."""
    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        present, value = _lookup(result, name)
        if not present:
            return None
        out.append(_format_part(value, spec or ""))
    return "".join(out)


def _label(key: str) -> str:
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + ELLIPSIS


# ------------------------------------------------------------------ rendering


def summary(result: Any, display: dict[str, Any] | None, width: int = 60) -> str:
    """The one-line summary of `result` for a table cell (at most `width` characters)."""
    if result is None:
        return ""
    templates = (display or {}).get("summary") or []
    if isinstance(templates, str):
        templates = [templates]
    for template in templates:
        try:
            text = fill(template, result)
        except (ValueError, TypeError):
            continue
        if text is not None:
            return _shorten(text, width)
    return _fallback_summary(result, width)


def _fallback_summary(result: Any, width: int) -> str:
    if isinstance(result, str):
        lines = result.strip().splitlines()
        text = (lines[0] if lines else "") + (" " + ELLIPSIS if len(lines) > 1 else "")
        return _shorten(text, width)
    if isinstance(result, dict) and isinstance(result.get("path"), str) and result["path"]:
        return _shorten(_format_part(result["path"], "name"), width)
    return _shorten(_text(result), width)


def render(result: Any, display: dict[str, Any] | None, width: int = 60) -> ResultView:
    """`result` as it reads through `display` (None: no display declared)."""
    text = summary(result, display, width)
    if not display or not isinstance(result, dict):
        return ResultView(text)
    fields = []
    for spec in display.get("fields") or []:
        f = _field(result, spec)
        if f is not None:
            fields.append(f)
    actions = []
    for a in display.get("actions") or []:
        present, value = _lookup(result, a.get("key", ""))
        if present and isinstance(value, str) and value:
            actions.append(Action(str(a.get("label") or "Open"), value))
    return ResultView(text, tuple(fields), tuple(actions), declared=True)


def _field(result: dict[str, Any], spec: dict[str, Any]) -> Field | None:
    key = str(spec.get("key", ""))
    try:
        kind = FieldType(spec.get("type", "text"))
    except ValueError:
        kind = FieldType.TEXT
    label = str(spec.get("label") or _label(key))
    lookup = f"{key}/{spec['of']}" if kind is FieldType.RATIO and spec.get("of") else key
    present, value = _lookup(result, lookup)
    if not present or (isinstance(value, list | dict) and not value
                       and kind is not FieldType.COUNT):  # fmt: skip
        return None  # nothing to show: no "Skipped" over an empty list
    if kind is FieldType.TABLE:
        if not isinstance(value, list):
            return Field(key, label, FieldType.JSON, _text(value), value)
        columns = tuple(
            Column(str(c["key"]), str(c.get("label") or _label(c["key"])),
                   _safe_type(c.get("type")), c.get("item"))  # fmt: skip
            for c in spec.get("columns") or [] if isinstance(c, dict) and "key" in c
        )
        rows = tuple(
            tuple(_cell(record, c) for c in columns) for record in value[:MAX_TABLE_ROWS]
        )
        return Field(key, label, kind, format_value(value, kind), value, columns, rows,
                     len(value))  # fmt: skip
    return Field(key, label, kind, format_value(value, kind, item=spec.get("item")), value)


def _safe_type(value: Any) -> FieldType:
    try:
        return FieldType(value or "text")
    except ValueError:
        return FieldType.TEXT


def _cell(record: Any, col: Column) -> str:
    if not isinstance(record, dict):
        return ""
    value = record.get(col.key)
    if value is None:
        return ""
    return format_value(value, col.type, item=col.item)


def text_lines(view: ResultView, *, max_rows: int = 20) -> list[str]:
    """The fields as aligned text lines (what `herald show` prints): "label  value", and
    each table as aligned columns (at most `max_rows` rows, then how many more)."""
    scalars = [f for f in view.fields if f.type is not FieldType.TABLE]
    width = max((len(f.label) for f in scalars), default=0)
    lines = [f"{f.label:<{width}}  {f.text}" for f in scalars]
    for f in view.fields:
        if f.type is not FieldType.TABLE:
            continue
        lines.append(f"{f.label} ({f.text}):")
        rows = [tuple(c.label for c in f.columns), *f.rows[:max_rows]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(f.columns))]
        for r in rows:
            lines.append("  " + "  ".join(
                cell.rjust(w) if _right(c.type) else cell.ljust(w)
                for cell, w, c in zip(r, widths, f.columns, strict=True)).rstrip())  # fmt: skip
        if f.total_rows > max_rows:
            lines.append(f"  … and {f.total_rows - max_rows:,} more")
    for a in view.actions:
        lines.append(f"{a.label}: {a.path}")
    return lines


def _right(kind: FieldType) -> bool:
    return kind in (FieldType.BYTES, FieldType.COUNT, FieldType.NUMBER, FieldType.RATIO,
                    FieldType.SECONDS, FieldType.CODE)  # fmt: skip


def field_types() -> list[str]:
    """Every field type a display may name."""
    return [t.value for t in FieldType]

