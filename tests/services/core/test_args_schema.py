"""The arguments' JSON Schema (`args_schema`) against the server's own validation.

For the built-in catalog and for generated declarations, generated argument documents
(valid ones and wrong types, bounds, missing and unknown keys, edge values) are valid under
the schema exactly when `validate_args` accepts them, and the fields a schema validator's
errors name are the fields of the server's 422. The one thing no schema can say (an integer
beyond 2^53 given to a number parameter, `SCHEMA_LIMITS["number"]`) is held to exactly that.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.errors import ValidationFailed
from services.core.params import (
    ABSOLUTE_PATH_PATTERN,
    MAX_DOUBLE,
    MAX_SAFE_INTEGER,
    REQUIRED,
    SCHEMA_LIMITS,
    TEXT_PATTERN,
    Param,
    ParamType,
    PathAccess,
    PathKind,
    args_schema,
    safe_integer,
    shown,
    validate_args,
    whole_match_pattern,
)
from services.tasks.catalog import load_catalog

BUILTIN = {spec.name: spec.params for spec in load_catalog()}

# No example database: the tree stays clean, and a failure prints its example.
CASES = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def server_fields(params: tuple[Param, ...], doc: Any) -> dict[str, str]:
    """The server's field errors for `doc` ({} when it accepts it)."""
    try:
        validate_args(params, doc)
    except ValidationFailed as exc:
        assert exc.fields, "a refusal names its fields"
        return exc.fields
    return {}


def schema_fields(schema: dict[str, Any], doc: Any) -> set[str]:
    """The fields a JSON Schema validator's errors name, as a page would put them beside
    its inputs: the property at the error's path; for a missing or an unknown key, that key
    (the server echoes an unknown key through `shown`); for the whole document, "args"."""
    fields: set[str] = set()
    for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
        if error.validator == "required":
            fields |= set(error.validator_value) - set(error.instance)
        elif error.validator == "additionalProperties":
            fields |= {shown(k) for k in error.instance if k not in schema["properties"]}
        elif error.absolute_path:
            fields.add(str(error.absolute_path[0]))
        else:
            fields.add("args")
    return fields


def unstorable_numbers(params: tuple[Param, ...], doc: Any) -> set[str]:
    """The number parameters given an integer beyond +-2^53 (SCHEMA_LIMITS["number"])."""
    if not isinstance(doc, dict):
        return set()
    return {
        p.name
        for p in params
        if p.type is ParamType.NUMBER
        and isinstance(doc.get(p.name), int)
        and not isinstance(doc.get(p.name), bool)
        and not safe_integer(doc[p.name])
    }


def check(params: tuple[Param, ...], doc: Any) -> None:
    """The schema and the server agree on `doc`: the same verdict, the same fields."""
    doc = json.loads(json.dumps(doc))  # as the API reads it ("1e400" is inf there too)
    schema = args_schema(params)
    jsonschema.Draft202012Validator.check_schema(schema)
    json.dumps(schema, allow_nan=False)  # what the catalog serves is JSON
    server = server_fields(params, doc)
    by_schema = schema_fields(schema, doc)
    unstorable = unstorable_numbers(params, doc)
    assert set(server) == by_schema | unstorable, (server, by_schema)
    for name in unstorable:  # the documented difference, and nothing else
        assert server[name] == "must be an integer from -2^53 to 2^53"
        assert SCHEMA_LIMITS["number"] in schema["description"]


# ---------------------------------------------------------------- values near each rule

_CHARS = st.sampled_from(
    [
        "a",
        "b",
        "z",
        "A",
        "1",
        "/",
        "~",
        "\\",
        ":",
        "C",
        " ",
        "\n",
        "\t",
        "\x00",
        "\ud800",
        "\udfff",
        "é",
        "😀",
        "-",
        ".",
    ]
)
TEXT = st.one_of(
    st.text(_CHARS, max_size=8),
    st.text(max_size=8),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
)
_PATH_STARTS = [
    "/",
    "~",
    "C:\\",
    "c:/",
    "Z:/x",
    "1:/",
    "é:/",
    ":/",
    " /",
    "",
    "rel/",
    "C:",
    "\\\\srv\\share",
    "~user/x",
    "/a\x00b",
    "/\ud800",
]
PATHS = st.builds(
    lambda head, tail: head + tail, st.sampled_from(_PATH_STARTS), st.text(_CHARS, max_size=4)
)
_EDGE_NUMBERS = [
    0,
    1,
    -1,
    0.5,
    -0.0,
    3.0,
    True,
    False,
    MAX_SAFE_INTEGER,
    -MAX_SAFE_INTEGER,
    MAX_SAFE_INTEGER + 1,
    -MAX_SAFE_INTEGER - 1,
    float(MAX_SAFE_INTEGER),
    float(MAX_SAFE_INTEGER) * 2,
    2**63,
    10**400,
    -(10**400),
    1e300,
    MAX_DOUBLE,
    -MAX_DOUBLE,
    math.inf,
    -math.inf,
]
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), TEXT, st.floats(allow_nan=False)
)  # NaN is not JSON (the API's 400)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def numbers_near(p: Param) -> st.SearchStrategy[Any]:
    edges: list[Any] = list(_EDGE_NUMBERS)
    for bound in (p.minimum, p.maximum):
        if bound is not None:
            edges += [
                bound,
                bound - 1,
                bound + 1,
                bound - 0.5,
                bound + 0.5,
                math.floor(bound),
                math.ceil(bound),
                math.nextafter(bound, math.inf),
                math.nextafter(bound, -math.inf),
            ]
            if float(bound).is_integer() and abs(bound) < 2**60:
                edges += [int(bound), int(bound) - 1, int(bound) + 1]
    return st.one_of(st.sampled_from(edges), st.integers(), st.floats(allow_nan=False))


def sizes_near(p: Param) -> st.SearchStrategy[int]:
    edges = [0, 1, 2]
    for bound in (p.minimum, p.maximum):
        if bound is not None and -1 <= bound <= 10:
            edges += [max(0, math.floor(bound) + d) for d in (-1, 0, 1)]
    return st.sampled_from(edges) | st.integers(0, 6)


def values(p: Param) -> st.SearchStrategy[Any]:
    """Values for `p`: mostly near what it accepts, some of any JSON type."""
    t = p.type
    near: st.SearchStrategy[Any]
    if t in (ParamType.INTEGER, ParamType.NUMBER):
        near = numbers_near(p)
    elif t is ParamType.BOOLEAN:
        near = st.sampled_from([True, False, 0, 1, "true", None])
    elif t is ParamType.CHOICE:
        choices = [c for c in p.choices or () if isinstance(c, str)]
        near = st.sampled_from(choices) | TEXT if choices else TEXT
        near = near | st.sampled_from([c.upper() + " " for c in choices] or [""])
    elif t is ParamType.PATH:
        near = PATHS | sizes_near(p).flatmap(lambda n: st.just("/" + "a" * max(0, n - 1)))
    elif t is ParamType.STRING:
        sized = sizes_near(p).flatmap(lambda n: st.text(_CHARS, min_size=n, max_size=n))
        near = sized | TEXT
        if p.pattern is not None:
            whole = st.from_regex(p.pattern, fullmatch=True)
            # A match and a newline: Python's `$` matches before it, fullmatch does not.
            near = near | whole | whole.map(lambda s: s + "\n") | st.from_regex(p.pattern)
    elif t is ParamType.STRING_LIST:
        near = sizes_near(p).flatmap(
            lambda n: st.lists(TEXT | st.integers(), min_size=n, max_size=n)
        )
    else:
        items = (
            st.sampled_from(
                [
                    0,
                    1,
                    -1,
                    2.0,
                    2.5,
                    True,
                    "1",
                    None,
                    MAX_SAFE_INTEGER,
                    MAX_SAFE_INTEGER + 1,
                    1e300,
                    math.inf,
                ]
            )
            | st.integers()
        )
        near = sizes_near(p).flatmap(lambda n: st.lists(items, min_size=n, max_size=n))
    return st.one_of(near, near, near, ANY_JSON)


@st.composite
def documents(draw: st.DrawFn, params: tuple[Param, ...]) -> Any:
    """An argument document: each parameter given, null or left out; maybe unknown keys;
    now and then not an object at all."""
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([[], "x", 1, None, True, [{"a": 1}]]))
    doc: dict[str, Any] = {}
    for p in params:
        how = draw(st.sampled_from(["value", "value", "value", "null", "missing"]))
        if how == "value":
            doc[p.name] = draw(values(p))
        elif how == "null":
            doc[p.name] = None
    if draw(st.integers(0, 4)) == 0:
        names = {p.name for p in params}
        extra = draw(st.lists(TEXT | st.just("x" * 150), min_size=1, max_size=2))
        doc.update({k: draw(ANY_JSON) for k in extra if k not in names})
    return doc


# ---------------------------------------------------------------- generated declarations

PATTERNS = [
    r"[a-z]+",
    r"\d{1,3}",
    r"a|bc",
    r"(?i)abc",
    r"x*$",
    r"^ab",
    r".*",
    r"[^/]+",
    r"\w+\s?",
    r"(a)(b)?\2?",
    r"[\s\S]{2}",
    r"(?m)^a$",
]
_BOUNDS = st.one_of(
    st.none(),
    st.integers(-10, 10),
    st.floats(-100, 100, allow_nan=False),
    st.sampled_from([0, 0.5, 2.5, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**60, 1e300, -1e300]),
)
# A default is never validated (neither by the server nor by a schema): any JSON will do.
DEFAULTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
)
_LENGTHS = st.one_of(st.none(), st.integers(0, 5), st.sampled_from([0.5, 2.5, -1, -0.5]))


@st.composite
def declaration(draw: st.DrawFn, name: str) -> Param:
    t = draw(st.sampled_from(list(ParamType)))
    numeric = t in (ParamType.INTEGER, ParamType.NUMBER)
    bounds = _BOUNDS if numeric else _LENGTHS
    choices = None
    if t is ParamType.CHOICE or draw(st.integers(0, 5)) == 0:
        choices = tuple(
            draw(st.lists(TEXT | st.sampled_from(["red", "blue", "a\x00", ""]), max_size=4))
        )
    pattern = draw(st.sampled_from(PATTERNS)) if draw(st.integers(0, 2)) == 0 else None
    default = REQUIRED if draw(st.booleans()) else draw(DEFAULTS)
    access = draw(st.sampled_from([None, None, *PathAccess]))
    return Param(
        name,
        t,
        title=draw(st.sampled_from(["", "A title"])),
        description=draw(st.sampled_from(["", "Some help."])),
        default=default,
        minimum=draw(bounds),
        maximum=draw(bounds),
        choices=choices,
        path_kind=draw(st.sampled_from([None, *PathKind])),
        pattern=pattern,
        access=access,
    )


@st.composite
def declarations(draw: st.DrawFn) -> tuple[Param, ...]:
    names = draw(
        st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True), max_size=4, unique=True)
    )
    return tuple(draw(declaration(name)) for name in names)


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("task", sorted(BUILTIN))
def test_builtin_task_schema_agrees_with_the_server(task: str) -> None:
    params = BUILTIN[task]

    @CASES
    @given(documents(params))
    def agree(doc: Any) -> None:
        check(params, doc)

    agree()


@CASES
@given(st.data())
def test_generated_declarations_agree_with_the_server(data: st.DataObject) -> None:
    params = data.draw(declarations())
    check(params, data.draw(documents(params)))


NUMBER = (Param("seconds", ParamType.NUMBER, default=5, minimum=0, maximum=3600),)
INTEGER = (Param("n", ParamType.INTEGER, minimum=-1.5, maximum=2**60),)
TEXTS = (
    Param("name", ParamType.STRING, minimum=1, maximum=3, pattern=r"[a-z]+"),
    Param("paths", ParamType.STRING_LIST, default=[], maximum=2),
)
PATH = (Param("where", ParamType.PATH, default=None, pattern="never checked"),)
LINES = (Param("line", ParamType.STRING, pattern=r"(?m)^a$"),)


EDGES = [
    (NUMBER, {"seconds": True}),
    (NUMBER, {"seconds": 1e400}),
    (NUMBER, {"seconds": None}),
    (NUMBER, {"seconds": 3600.0000000000005}),
    (NUMBER, {"seconds": 2**53 + 1}),
    (NUMBER, {"seconds": -(2**60)}),
    (NUMBER, {"Seconds": 1}),
    (NUMBER, []),
    (INTEGER, {"n": -1}),
    (INTEGER, {"n": -2}),
    (INTEGER, {"n": 2.0}),
    (INTEGER, {"n": 2.5}),
    (INTEGER, {"n": 2**53}),
    (INTEGER, {"n": 2**53 + 1}),
    (INTEGER, {"n": 1e300}),
    (INTEGER, {"n": False}),
    (INTEGER, {}),
    (INTEGER, {"n": None}),
    (TEXTS, {"name": "abc"}),
    (TEXTS, {"name": "ab\n"}),
    (TEXTS, {"name": "ab\x00"}),
    (TEXTS, {"name": "a\ud800"}),
    (TEXTS, {"name": ""}),
    (TEXTS, {"name": "abcd"}),
    (TEXTS, {"name": "a", "paths": ["x", "y", "z"]}),
    (TEXTS, {"name": "a", "paths": [1]}),
    (TEXTS, {"name": "a", "paths": ["\udc80"]}),
    (TEXTS, {"name": "a", "x\ud800": 1}),
    (TEXTS, {"name": "a", "k" * 150: 1}),
    (PATH, {"where": "/x"}),
    (PATH, {"where": "C:\\x"}),
    (PATH, {"where": "1:/x"}),
    (PATH, {"where": " /x"}),
    (PATH, {"where": "   "}),
    (PATH, {"where": "~"}),
    (PATH, {"where": "/\x00"}),
    (PATH, {"where": "relative"}),
    (PATH, {"where": ""}),
    (LINES, {"line": "a"}),
    (LINES, {"line": "b\na"}),
    (LINES, {"line": "a\nb"}),
    (LINES, {"line": "a\n"}),
]


@pytest.mark.parametrize(("params", "doc"), EDGES, ids=[repr(doc) for _, doc in EDGES])
def test_edge_documents(params: tuple[Param, ...], doc: Any) -> None:
    """The edges named in the brief, whatever Hypothesis draws: bool as a number, a
    number beyond a double, floats and huge integers as integers, a newline after a
    pattern's match, NUL and lone surrogates, paths that only look absolute."""
    check(params, doc)


def test_a_drive_letter_is_a_letter() -> None:
    """ "1:/x" is a relative name on every system: the server refused it only since the
    schema said what it accepts ("C:/x" and "c:\\x" stay absolute)."""
    where = Param("where", ParamType.PATH)
    with pytest.raises(ValueError, match="absolute"):
        where.validate("1:/x")
    assert where.validate("c:\\x") == "c:\\x"


def test_builtin_schemas_label_their_fields() -> None:
    """Each property carries its parameter's label and help, as the form shows them, and
    the schema says what it cannot check."""
    for params in BUILTIN.values():
        schema = args_schema(params)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        assert list(schema["properties"]) == [p.name for p in params]
        for p in params:
            prop = schema["properties"][p.name]
            assert prop["title"] == p.to_json()["title"] and prop["title"]
            assert prop["description"] == p.description
            assert ("default" in prop) is (not p.required)
    assert SCHEMA_LIMITS["path"] in args_schema(BUILTIN["files.checksum"])["description"]
    assert SCHEMA_LIMITS["number"] in args_schema(BUILTIN["demo.answer"])["description"]
    assert SCHEMA_LIMITS["program"] in args_schema(BUILTIN["process.run"])["description"]


_JS_SEARCH = """
const [patterns, texts] = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(patterns.map(p => texts.map(t => new RegExp(p, "u").test(t)))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed")
def test_the_schemas_own_patterns_read_the_same_in_javascript() -> None:
    """The page compiles a pattern with JavaScript's RegExp ("u" flag): the schema's own
    patterns (text, paths, a declared pattern's anchoring) match there exactly the strings
    they match in Python, every string of up to two of the tricky characters included."""
    patterns = sorted(
        {
            TEXT_PATTERN,
            ABSOLUTE_PATH_PATTERN,
            *(whole_match_pattern(p) for p in ("[a-z]+", "x*$", "a|bc", "[^/]*")),
        }
    )
    alphabet = [c for c in _CHARS.elements] + ["\ud83d\ude00"]  # and a surrogate pair
    texts = ["".join(t) for n in range(3) for t in itertools.product(alphabet, repeat=n)]
    texts = [json.loads(json.dumps(t)) for t in texts]  # what a JSON parser reads (pairs)
    out = subprocess.run(
        ["node", "-e", _JS_SEARCH],
        input=json.dumps([patterns, texts]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    in_js = json.loads(out.stdout)
    in_python = [[re.search(p, t) is not None for t in texts] for p in patterns]
    for pattern, js, py in zip(patterns, in_js, in_python, strict=True):
        differ = [t for t, a, b in zip(texts, js, py, strict=True) if a != b]
        assert not differ, (pattern, differ[:5])
