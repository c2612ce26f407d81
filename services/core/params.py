"""Declared task parameters: their types and constraints, validation and text coercion.

Pure: the catalog declares parameters with `Param`, the web service validates submitted
arguments with `validate_args`, the command line turns `key=value` text into typed values
with `Param.from_text`, and the catalog endpoint publishes `Param.to_json()` and, for each
task, `args_schema()`: a JSON Schema (draft 2020-12) that accepts exactly what
`validate_args` accepts, but for what `SCHEMA_LIMITS` says no schema can.

What every value must be, whatever its parameter, so that each side can store and read it
back (SQLite, JavaScript, UTF-8): integers within +-2^53 (`MAX_SAFE_INTEGER`) and text
that is a sequence of Unicode scalar values (no lone surrogate, which JSON's `\ud800`
escape can carry). Keys and text echoed in an error go through `shown` first.
"""

from __future__ import annotations

import math
import re
import string
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.errors import ValidationFailed


class ParamType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    PATH = "path"
    CHOICE = "choice"
    STRING_LIST = "string_list"
    INTEGER_LIST = "integer_list"  # e.g. exit codes; typed `0,1` or `0 1`


class PathKind(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    ANY = "any"  # an existing file or folder
    NEW_FILE = "new_file"  # a file to be written; its folder must exist


class PathAccess(StrEnum):
    """What a task does with a path argument (the capability it needs)."""

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"  # a program to run: a name looked up in PATH, or a path


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# What validate() checks of text, as JSON Schema patterns (ECMA-262 with the "u" flag, as
# JavaScript validators compile them; Python's re reads them the same): no NUL, no lone
# surrogate; a path also starts as an absolute one does.
TEXT_PATTERN = r"^[^\u0000\ud800-\udfff]*$"
ABSOLUTE_PATH_PATTERN = r"^(?:/|~|[A-Za-z]:[\\/])[^\u0000\ud800-\udfff]*$"

# The largest integer every side represents exactly (a JavaScript number, a double).
MAX_SAFE_INTEGER = 2**53
MAX_DOUBLE = sys.float_info.max  # a NUMBER beyond it reads as infinity ("1e400")

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a task.

    Args:
        name: the argument's key.
        type: its type.
        title: a short label for forms.
        description: one sentence of help.
        default: the value used when the argument is absent; REQUIRED if it must be given.
        minimum, maximum: bounds for numbers; length bounds for strings and lists.
        choices: the allowed values of a CHOICE parameter.
        path_kind: what a PATH must point at.
        pattern: a regular expression a STRING must match in full.
        access: what the task does with a PATH (default: WRITE for NEW_FILE, else READ);
            a STRING with an access is a path when it holds a separator (a program).
    """

    name: str
    type: ParamType
    title: str = ""
    description: str = ""
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    path_kind: PathKind | None = None
    pattern: str | None = None
    access: PathAccess | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def path_access(self) -> PathAccess | None:
        """What the task does with this argument's path; None: it is not a path."""
        if self.access is not None:
            return self.access
        if self.type is not ParamType.PATH:
            return None
        return PathAccess.WRITE if self.path_kind is PathKind.NEW_FILE else PathAccess.READ

    def to_json(self) -> dict[str, Any]:
        """The parameter as published by the catalog."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.value,
            "title": self.label,
            "description": self.description,
            "required": self.required,
        }
        if not self.required:
            out["default"] = self.default
        for key in ("minimum", "maximum", "pattern"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.path_kind is not None:
            out["path_kind"] = self.path_kind.value
        if self.path_access is not None:
            out["access"] = self.path_access.value
        return out

    def json_schema(self) -> dict[str, Any]:
        """A given value's JSON Schema: exactly what `validate` accepts (see SCHEMA_LIMITS),
        with the parameter's description and default.

        Bounds are the declared ones within what every side stores (+-2^53 for integers,
        +-MAX_DOUBLE for numbers); length bounds are whole numbers (`_check_length`
        compares a count, so 2.5 characters at most is 2). A declaration nothing can
        satisfy (no valid choice, a negative maximum length) is an empty `enum`.
        """
        t = self.type
        schema: dict[str, Any]
        if t is ParamType.BOOLEAN:
            schema = {"type": "boolean"}
        elif t is ParamType.INTEGER:
            schema = {"type": "integer", **self._bounds(MAX_SAFE_INTEGER)}
        elif t is ParamType.NUMBER:
            schema = {"type": "number", **self._bounds(MAX_DOUBLE)}
        elif t is ParamType.CHOICE:
            valid = [c for c in self.choices or () if isinstance(c, str) and _text_ok(c)]
            schema = {"type": "string", "enum": valid}
        elif t is ParamType.STRING_LIST:
            items: dict[str, Any] = {"type": "string", "pattern": TEXT_PATTERN}
            schema = {"type": "array", "items": items, **self._lengths("Items")}
        elif t is ParamType.INTEGER_LIST:
            items = {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER}
            schema = {"type": "array", "items": items, **self._lengths("Items")}
        elif t is ParamType.PATH:  # a PATH's `pattern` is not checked (validate)
            schema = {"type": "string", **self._lengths("Length"),
                      "pattern": ABSOLUTE_PATH_PATTERN}  # fmt: skip
        else:
            schema = {"type": "string", **self._lengths("Length"), "pattern": TEXT_PATTERN}
            if self.pattern is not None:
                # Both must match: allOf, since a schema has one `pattern`. The declared
                # one goes in `pattern` itself, where a form looks for it.
                schema["pattern"] = whole_match_pattern(self.pattern)
                schema["allOf"] = [{"pattern": TEXT_PATTERN}]
        if self.description:
            schema["description"] = self.description
        if not self.required:
            schema["default"] = self.default
        return schema

    @property
    def label(self) -> str:
        """The parameter's title, or one made from its name."""
        return self.title or self.name.replace("_", " ").capitalize()

    def _bounds(self, limit: float) -> dict[str, Any]:
        lo = -limit if self.minimum is None else max(self.minimum, -limit)
        hi = limit if self.maximum is None else min(self.maximum, limit)
        return {"minimum": lo, "maximum": hi}

    def _lengths(self, kind: str) -> dict[str, Any]:
        """minLength/maxLength (kind "Length") or minItems/maxItems ("Items")."""
        out: dict[str, Any] = {}
        if self.minimum is not None and self.minimum > 0:
            out["min" + kind] = math.ceil(self.minimum)
        if self.maximum is not None:
            if self.maximum < 0:
                return {"enum": []}  # nothing has fewer than 0 characters or items
            out["max" + kind] = math.floor(self.maximum)
        return out

    def validate(self, value: Any) -> Any:
        """The value, checked against the type and constraints.

        Raises:
            ValueError: with a message for the user.
        """
        t = self.type
        if t is ParamType.BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if t is ParamType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("must be an integer")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError("must be an integer")
                value = int(value)
            if not safe_integer(value):
                raise ValueError(_UNSAFE_INTEGER)
            self._check_bounds(value)
            return value
        if t is ParamType.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("must be a number")
            if isinstance(value, int) and not safe_integer(value):
                raise ValueError(_UNSAFE_INTEGER)
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            self._check_bounds(value)
            return value
        if t is ParamType.STRING_LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("must be a list of strings")
            if any("\x00" in v for v in value):
                raise ValueError("must not contain NUL characters")
            if not all(scalar_text(v) for v in value):
                raise ValueError(_NOT_UNICODE)
            self._check_length(len(value), "items")
            return value
        if t is ParamType.INTEGER_LIST:
            if not isinstance(value, list) or not all(
                (isinstance(v, int) and not isinstance(v, bool))
                or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
                for v in value
            ):
                raise ValueError("must be a list of integers")
            if not all(safe_integer(int(v)) for v in value):
                raise ValueError(_UNSAFE_INTEGER)
            self._check_length(len(value), "items")
            return [int(v) for v in value]
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if not scalar_text(value):
            raise ValueError(_NOT_UNICODE)
        if t is ParamType.CHOICE:
            if value not in (self.choices or ()):
                raise ValueError("must be one of: " + ", ".join(self.choices or ()))
            return value
        if t is ParamType.PATH:
            if not value.strip():
                raise ValueError("must not be empty")
            if not (value.startswith("/") or value.startswith("~") or _is_windows_abs(value)):
                raise ValueError("must be an absolute path")
            self._check_length(len(value), "characters")
            return value
        self._check_length(len(value), "characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"must match {self.pattern}")
        return value

    def from_text(self, text: str) -> Any:
        """A typed value from command-line text (`key=value`), not yet validated.

        Raises:
            ValueError: the text cannot be read as this parameter's type.
        """
        t = self.type
        if t is ParamType.BOOLEAN:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("must be true or false")
        if t is ParamType.INTEGER:
            try:
                return int(text)
            except ValueError:
                raise ValueError("must be an integer") from None
        if t is ParamType.NUMBER:
            try:
                return float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        if t is ParamType.STRING_LIST:
            import shlex

            return shlex.split(text)
        if t is ParamType.INTEGER_LIST:
            try:
                return [int(part) for part in re.split(r"[\s,]+", text.strip()) if part]
            except ValueError:
                raise ValueError("must be integers separated by commas") from None
        return text

    def _check_bounds(self, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {_num(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {_num(self.maximum)}")

    def _check_length(self, n: int, unit: str) -> None:
        if self.minimum is not None and n < self.minimum:
            raise ValueError(f"must have at least {_num(self.minimum)} {unit}")
        if self.maximum is not None and n > self.maximum:
            raise ValueError(f"must have at most {_num(self.maximum)} {unit}")


_UNSAFE_INTEGER = "must be an integer from -2^53 to 2^53"
_NOT_UNICODE = "must be valid Unicode (no lone surrogates)"


def safe_integer(value: int) -> bool:
    """Whether an integer lies within +-2^53."""
    return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def scalar_text(text: str) -> bool:
    """Whether `text` is a sequence of Unicode scalar values (UTF-8 can encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: object, limit: int = 100) -> str:
    """`text` cut to `limit` characters, lone surrogates replaced: safe to echo in an error."""
    out = str(text)[:limit]
    if scalar_text(out):
        return out
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in out)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_DRIVE_LETTERS = frozenset(string.ascii_letters)


def _is_windows_abs(value: str) -> bool:
    """A drive letter, a colon and a separator ("C:\\", "d:/"): absolute on Windows."""
    return len(value) > 2 and value[0] in _DRIVE_LETTERS and value[1] == ":" and value[2] in "\\/"


def validate_args(params: tuple[Param, ...] | list[Param], args: Any) -> dict[str, Any]:
    """Check submitted arguments against declared parameters, filling in defaults.

    Returns:
        The complete, typed arguments.
    Raises:
        ValidationFailed: with one message per offending field.
    """
    if not isinstance(args, dict):
        raise ValidationFailed({"args": "must be a JSON object"})
    known = {p.name: p for p in params}
    fields: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key in args:
        if key not in known:
            fields[shown(key)] = "unknown parameter"
    for p in params:
        if p.name not in args or args[p.name] is None:
            if p.required:
                fields[p.name] = "is required"
            else:
                out[p.name] = p.default
            continue
        try:
            out[p.name] = p.validate(args[p.name])
        except ValueError as exc:
            fields[p.name] = str(exc)
    if fields:
        raise ValidationFailed(fields)
    return out


# ------------------------------------------------------------------ the arguments' JSON Schema

# What the server checks that a JSON Schema cannot say, each in a task's schema description
# when one of its parameters is concerned (and in the field's 422 when it happens).
SCHEMA_LIMITS = {
    # JSON Schema holds 1e16 and 10000000000000000 equal; the server reads the second as an
    # integer, which beyond +-2^53 it cannot store exactly.
    "number": "A number parameter also refuses an integer beyond +-2^53 written without a "
              "fraction or an exponent (9007199254740993: \"must be an integer from -2^53 to "
              "2^53\"), which the schema accepts: JSON Schema cannot tell it from the same "
              "number written 9.007199254740993e15, which the server reads as the nearest "
              "double and accepts. Send such numbers with an exponent.",
    "path": "A path must also be what its parameter's path_kind says on the file system "
            "(a file, a folder, a new file whose folder exists; 422 with the field), never "
            "in Herald's own folders (422), and within the caller's folders (403): checked "
            "at submit.",
    "program": "A program given as a path (it holds a separator) must lie within the "
               "caller's folders (403), never in Herald's own (422): checked at submit.",
    # The task's own regex, which the server runs with Python's re.
    "pattern": "A declared pattern is the task's Python regular expression: where Python "
               "reads it otherwise than ECMA-262 does (\\d, \\w and \\s match any Unicode "
               "digit, word or space character; (?P<name>...); inline flags such as (?i)), "
               "the server's reading is the one that counts.",
}  # fmt: skip


def args_schema(params: tuple[Param, ...] | list[Param]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a task's `args` object: valid exactly when
    `validate_args` accepts it, but for the `SCHEMA_LIMITS` its description names.

    Each property has its parameter's label as `title` and help text as `description`,
    for a form. An optional parameter also takes null (it then takes its default, as when
    left out). Unknown keys are refused, as the server refuses them. Its own patterns
    are ECMA-262 regular expressions for the "u" flag (as Python's re reads them too); a
    declared one is anchored with lookarounds (ECMA-262 has no \\A or \\Z).
    """
    properties: dict[str, Any] = {}
    limits: list[str] = []
    for p in params:
        properties[p.name] = {"title": p.label, **p.json_schema()}
        if not p.required:
            _accept_null(properties[p.name])
        if p.type is ParamType.NUMBER:
            limits.append("number")
        elif p.type is ParamType.PATH:
            limits.append("path")
        elif p.path_access is not None:
            limits.append("program")
        if p.type is ParamType.STRING and p.pattern is not None:
            limits.append("pattern")
    out: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, "type": "object"}
    if limits:
        out["description"] = " ".join(text for k, text in SCHEMA_LIMITS.items() if k in limits)
    out["properties"] = properties
    required = [p.name for p in params if p.required]
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def whole_match_pattern(pattern: str) -> str:
    """A JSON Schema pattern (a search) that matches where `re.fullmatch(pattern)` does.

    `^...$` alone would not do in Python, whose `$` also matches before a final newline
    (and `^`, `$` at each line under a declared `(?m)`): the lookarounds hold both ends
    there. Lookarounds alone would not do in JavaScript, whose RegExp with the "u" flag
    tries positions inside a surrogate pair and sees no character on either side there:
    `^` and `$` hold both ends there. Global inline flags (`(?i)`) stay in front, where
    Python wants them.
    """
    flags = re.match(r"\(\?[aiLmsux]+\)", pattern)
    head = flags.group(0) if flags else ""
    body = pattern[len(head) :]
    return f"{head}^(?<![\\s\\S])(?:{body})$(?![\\s\\S])"


def _accept_null(schema: dict[str, Any]) -> None:
    """Let a property's schema also take null (every keyword but type and enum applies to
    one type only)."""
    schema["type"] = [schema["type"], "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]


def _text_ok(text: str) -> bool:
    return "\x00" not in text and scalar_text(text)


# ------------------------------------------------------------------ what a path points at

OVERWRITE_PARAM = "overwrite"  # a task's boolean parameter that lets it replace a destination


def overwrite_param(params: tuple[Param, ...] | list[Param]) -> Param | None:
    """The task's "overwrite" switch (a BOOLEAN parameter of that name), or None: a task
    without one decides for itself about an existing destination."""
    return next((p for p in params if p.name == OVERWRITE_PARAM
                 and p.type is ParamType.BOOLEAN), None)  # fmt: skip


def parent_folder(path: str) -> str:
    """The folder a path's last component lives in ("/" for a top-level name)."""
    trimmed = path.rstrip("/\\") or path
    cut = max(trimmed.rfind("/"), trimmed.rfind("\\"))
    if cut < 0:
        return ""
    return trimmed[:cut] or trimmed[: cut + 1]


def path_problem(kind: PathKind | str | None, *, exists: bool, is_dir: bool,
                 parent_is_dir: bool, overwrite: bool | None = None,
                 missing_ok: bool = False) -> str | None:  # fmt: skip
    """What is wrong with what a path points at, for a parameter of `kind`; None if fine.

    The caller looks at the file system (this module does no I/O) and says what it found.
    One wording for the server's 422 and the form's inline check.

    Args:
        exists: something is there (a file, a folder, a link).
        is_dir: it is a folder.
        parent_is_dir: the folder it would be created in exists.
        overwrite: the task's "overwrite" switch for a NEW_FILE (None: the task has none,
            and an existing file is its own business).
        missing_ok: say nothing of a path that does not exist yet (the form, while the
            user types: the server has the last word on those).
    """
    kind = PathKind(kind) if kind else PathKind.ANY
    if kind is PathKind.NEW_FILE:
        if is_dir:
            return "is a folder; give a file name"
        if exists:
            return ("already exists; turn on Overwrite to replace it"
                    if overwrite is False else None)  # fmt: skip
        if not parent_is_dir and not missing_ok:
            return "its folder does not exist"
        return None
    if not exists:
        if missing_ok:
            return None
        return {PathKind.FILE: "no such file", PathKind.DIRECTORY: "no such folder"}.get(
            kind, "no such file or folder")  # fmt: skip
    if kind is PathKind.FILE and is_dir:
        return "is a folder, not a file"
    if kind is PathKind.DIRECTORY and not is_dir:
        return "is a file, not a folder"
    return None
