"""Declared parameters: validation, defaults, text coercion and JSON forms."""

import pytest

from services.core.errors import ValidationFailed
from services.core.params import MAX_SAFE_INTEGER, Param, ParamType, shown, validate_args

PARAMS = [
    Param("seconds", ParamType.NUMBER, default=5, minimum=0, maximum=10),
    Param("count", ParamType.INTEGER, minimum=1),
    Param("mode", ParamType.CHOICE, default="zip", choices=("zip", "tar.gz")),
    Param("flag", ParamType.BOOLEAN, default=False),
    Param("path", ParamType.PATH, default=""),
    Param("argv", ParamType.STRING_LIST, default=[]),
]


def test_defaults_filled_in():
    assert validate_args(PARAMS, {"count": 2}) == {
        "seconds": 5, "count": 2, "mode": "zip", "flag": False, "path": "", "argv": []}  # fmt: skip


def test_every_bad_field_reported():
    with pytest.raises(ValidationFailed) as info:
        validate_args(PARAMS, {"seconds": 11, "mode": "rar", "flag": "yes", "argv": [1],
                               "path": "relative/x", "extra": 1})  # fmt: skip
    fields = info.value.fields
    assert info.value.status == 422
    assert set(fields) == {"seconds", "count", "mode", "flag", "argv", "path", "extra"}
    assert fields["count"] == "is required"
    assert fields["extra"] == "unknown parameter"
    assert "at most 10" in fields["seconds"]


@pytest.mark.parametrize("value", [True, 1.5, "3", float("nan")])
def test_integer_rejects_non_integers(value):
    with pytest.raises(ValueError):
        Param("n", ParamType.INTEGER).validate(value)


@pytest.mark.parametrize("value", [2**4000, -(2**4000), MAX_SAFE_INTEGER + 1, 1e300])
@pytest.mark.parametrize("kind", [ParamType.INTEGER, ParamType.NUMBER])
def test_integers_beyond_2_to_the_53_are_refused(kind, value):
    """They cannot be stored (SQLite: 64 bits) nor read back exactly (JavaScript, float)."""
    if kind is ParamType.NUMBER and isinstance(value, float):
        assert Param("n", kind).validate(value) == value  # a float is a float
        return
    with pytest.raises(ValueError, match="2\\^53"):
        Param("n", kind).validate(value)
    assert Param("n", kind).validate(MAX_SAFE_INTEGER) == MAX_SAFE_INTEGER


@pytest.mark.parametrize(("kind", "value"), [
    (ParamType.STRING, "a\ud800"), (ParamType.PATH, "/tmp/\udfff"),
    (ParamType.STRING_LIST, ["ok", "\udc80"]), (ParamType.CHOICE, "\ud800"),
])  # fmt: skip
def test_lone_surrogates_are_refused(kind, value):
    param = Param("s", kind, choices=("\ud800",) if kind is ParamType.CHOICE else None)
    with pytest.raises(ValueError, match="Unicode"):
        param.validate(value)


def test_a_key_that_is_not_unicode_is_shown_safely():
    with pytest.raises(ValidationFailed) as info:
        validate_args(PARAMS, {"count": 1, "x\ud800": 1})
    assert info.value.fields == {"x\ufffd": "unknown parameter"}
    assert shown("a" * 200) == "a" * 100


def test_args_must_be_an_object():
    with pytest.raises(ValidationFailed):
        validate_args(PARAMS, [1])


def test_from_text():
    assert Param("n", ParamType.INTEGER).from_text("3") == 3
    assert Param("x", ParamType.NUMBER).from_text("0.5") == 0.5
    assert Param("b", ParamType.BOOLEAN).from_text("yes") is True
    assert Param("l", ParamType.STRING_LIST).from_text("-c 'a b'") == ["-c", "a b"]
    with pytest.raises(ValueError):
        Param("n", ParamType.INTEGER).from_text("three")


def test_json_forms():
    p = PARAMS[0]
    assert p.to_json()["default"] == 5
    assert p.json_schema() == {"type": "number", "minimum": 0, "maximum": 10, "default": 5}
    assert PARAMS[2].json_schema()["enum"] == ["zip", "tar.gz"]
    assert PARAMS[1].to_json()["required"] is True
