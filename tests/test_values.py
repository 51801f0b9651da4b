"""Unit tests for Postgres text-format -> JSON value converters (``cdc.values``).

Inputs are the text forms Postgres emits with DateStyle=ISO, TimeZone=UTC and
extra_float_digits=3, as the replication session is configured.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.values import UserType, converter_for, parse_array


def convert(type_oid: int, text: str):
    """The value as the event's JSON carries it (json/jsonb values are embedded, not parsed)."""
    return orjson.loads(orjson.dumps(converter_for(type_oid)(text.encode("utf-8"))))


# --------------------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("t", True), ("f", False)])
def test_bool(text, expected):
    assert convert(16, text) is expected


@pytest.mark.parametrize(("type_oid", "text", "expected"), [
    (21, "0", 0),
    (21, "-32768", -32768),
    (21, "32767", 32767),
    (23, "-2147483648", -2147483648),
    (23, "2147483647", 2147483647),
    (20, "-9223372036854775808", -9223372036854775808),
    (20, "9223372036854775807", 9223372036854775807),
    (26, "4294967295", 4294967295),
], ids=lambda value: str(value))
def test_integers(type_oid, text, expected):
    result = convert(type_oid, text)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("type_oid", [700, 701])
@pytest.mark.parametrize(("text", "expected"), [
    ("1.5", 1.5),
    ("0.1", 0.1),
    ("-2.25", -2.25),
    ("1e+300", 1e300),
    ("1.17549435e-38", 1.17549435e-38),
])
def test_floats(type_oid, text, expected):
    result = convert(type_oid, text)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("type_oid", [700, 701])
def test_float_negative_zero(type_oid):
    result = convert(type_oid, "-0")
    assert result == 0.0
    assert type(result) is float
    assert math.copysign(1.0, result) == -1.0


@pytest.mark.parametrize("type_oid", [700, 701])
@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_float_non_finite_become_strings(type_oid, text):
    assert convert(type_oid, text) == text


@pytest.mark.parametrize("text", ["12345678901234567890.123456789", "0.10", "-1", "NaN", "Infinity", "1e-5"])
def test_numeric_stays_exact_string(text):
    assert convert(1700, text) == text


@pytest.mark.parametrize("type_oid", [114, 3802])
def test_json(type_oid):
    text = '{"a": [1, 2.5, null, "x"], "b": {"c": true}, "ü": "名前"}'
    assert convert(type_oid, text) == {"a": [1, 2.5, None, "x"], "b": {"c": True}, "ü": "名前"}


@pytest.mark.parametrize("type_oid", [114, 3802])
@pytest.mark.parametrize(("text", "expected"), [("null", None), ('"s"', "s"), ("42", 42), ("[]", [])])
def test_json_scalars(type_oid, text, expected):
    assert convert(type_oid, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("\\x00ff10", "AP8Q"),
    ("\\x", ""),
    ("\\x68656c6c6f", "aGVsbG8="),
])
def test_bytea_hex_to_base64(text, expected):
    assert convert(17, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01 12:00:00.5", "2024-05-01T12:00:00.5"),
    ("2024-05-01 12:00:00", "2024-05-01T12:00:00"),
    ("1999-12-31 23:59:59.999999", "1999-12-31T23:59:59.999999"),
    ("infinity", "infinity"),
    ("-infinity", "-infinity"),
])
def test_timestamp(text, expected):
    assert convert(1114, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01 12:00:00.5+00", "2024-05-01T12:00:00.5Z"),
    ("2024-05-01 12:00:00+00", "2024-05-01T12:00:00Z"),
    ("2024-05-01 12:00:00.5+05:30", "2024-05-01T12:00:00.5+05:30"),
    ("2024-05-01 12:00:00-09:30", "2024-05-01T12:00:00-09:30"),
    ("2024-05-01 12:00:00+05", "2024-05-01T12:00:00+05:00"),
    ("2024-05-01 12:00:00.123456-03", "2024-05-01T12:00:00.123456-03:00"),
    ("infinity", "infinity"),
    ("-infinity", "-infinity"),
])
def test_timestamptz(text, expected):
    assert convert(1184, text) == expected


@pytest.mark.parametrize("type_oid", [25, 1043, 1042, 1700, 99999])
def test_text_like_and_unknown_types_keep_text(type_oid):
    text = "Ünïcødé 名前 🎉 {1,2}"
    assert convert(type_oid, text) == text


def test_unknown_oid_keeps_text_form():
    assert convert(99999, "(1,2)") == "(1,2)"


def test_text_unicode():
    assert convert(25, "Ünïcødé — 名前 🎉") == "Ünïcødé — 名前 🎉"


# --------------------------------------------------------------------------------------
# Arrays: parse_array
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("{}", []),
    ("{1,2,NULL}", ["1", "2", None]),
    ("{null,Null}", [None, None]),
    ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
    ("{{{1},{2}},{{3},{4}}}", [[["1"], ["2"]], [["3"], ["4"]]]),
    ("[0:1]={1,2}", ["1", "2"]),
    ("[1:2][1:1]={{1},{2}}", [["1"], ["2"]]),
    ('{"NULL",NULL,""}', ["NULL", None, ""]),
])
def test_parse_array(text, expected):
    assert parse_array(text) == expected


def test_parse_array_custom_delimiter():
    assert parse_array("{(0,0),(1,1);(2,2),(3,3)}", delimiter=";") == ["(0,0),(1,1)", "(2,2),(3,3)"]


# --------------------------------------------------------------------------------------
# Arrays: converters
# --------------------------------------------------------------------------------------


def test_int4_array_with_null():
    assert convert(1007, "{1,2,NULL}") == [1, 2, None]


def test_int4_array_multi_dimensional():
    assert convert(1007, "{{1,2},{3,4}}") == [[1, 2], [3, 4]]


def test_int4_array_empty():
    assert convert(1007, "{}") == []


def test_int4_array_with_bounds_prefix():
    assert convert(1007, "[0:1]={1,2}") == [1, 2]


def test_int8_and_int2_arrays():
    assert convert(1016, "{-9223372036854775808,9223372036854775807}") == [-9223372036854775808,
                                                                            9223372036854775807]
    assert convert(1005, "{-32768,NULL,32767}") == [-32768, None, 32767]


def test_text_array_with_quoted_elements():
    # Postgres' output for ARRAY['plain', 'a,b', 'say "hi"', 'back\slash', '{braces}', 'NULL', NULL, '', 'ü 名前']
    text = r'{plain,"a,b","say \"hi\"","back\\slash","{braces}","NULL",NULL,"","ü 名前"}'
    assert convert(1009, text) == ["plain", "a,b", 'say "hi"', "back\\slash", "{braces}", "NULL", None, "",
                                   "ü 名前"]


def test_text_array_quoted_null_is_a_string():
    result = convert(1009, '{"NULL",NULL}')
    assert result == ["NULL", None]
    assert result[0] == "NULL"


def test_text_array_multi_dimensional_quoted():
    assert convert(1009, r'{{"a}","b,"},{"\\",""}}') == [["a}", "b,"], ["\\", ""]]


def test_timestamptz_array():
    text = '{"2024-05-01 12:00:00.5+00","2024-05-01 12:00:00+05:30","2024-05-01 12:00:00-03",infinity,NULL}'
    assert convert(1185, text) == [
        "2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00+05:30", "2024-05-01T12:00:00-03:00", "infinity", None]


def test_timestamp_array():
    assert convert(1115, '{"2024-05-01 12:00:00.5",-infinity}') == ["2024-05-01T12:00:00.5", "-infinity"]


def test_jsonb_array():
    assert convert(3807, '{"{\\"a\\": 1}"}') == [{"a": 1}]


def test_jsonb_array_mixed_elements():
    # Postgres' output for ARRAY['{"a": [1, 2]}', '"x"', '1', 'null', NULL]::jsonb[]
    text = r'{"{\"a\": [1, 2]}","\"x\"",1,null,NULL}'
    assert convert(3807, text) == [{"a": [1, 2]}, "x", 1, None, None]


def test_json_array():
    assert convert(199, r'{"{\"k\": \"v\"}"}') == [{"k": "v"}]


def test_bool_array():
    assert convert(1000, "{t,f,NULL}") == [True, False, None]


def test_float8_array_with_non_finite():
    assert convert(1022, "{1.5,NaN,Infinity,-Infinity,NULL,-0}") == [1.5, "NaN", "Infinity", "-Infinity", None, -0.0]


def test_float4_array():
    assert convert(1021, "{0.1,NaN}") == [0.1, "NaN"]


def test_numeric_array_stays_strings():
    assert convert(1231, "{12345678901234567890.123456789,NaN,NULL}") == [
        "12345678901234567890.123456789", "NaN", None]


def test_bytea_array():
    # Postgres' output for ARRAY['\x00ff10'::bytea]: the backslash is escaped inside quotes.
    assert convert(1001, r'{"\\x00ff10","\\x"}') == ["AP8Q", ""]


def test_array_of_type_without_converter_keeps_text():
    assert convert(1182, "{2024-05-01,NULL}") == ["2024-05-01", None]  # date[]


def test_user_types_resolve_through_the_catalog_description():
    """Domains convert as their base type; arrays of user types element-wise; enums stay text."""
    types = {
        16500: UserType(16500),  # an enum: neither domain nor array
        16501: UserType(16501, element_oid=16500),  # the enum's array
        16510: UserType(16510, base_oid=23),  # a domain over int4
        16511: UserType(16511, element_oid=16510),  # the domain's array
        16520: UserType(16520, base_oid=16510),  # a domain over that domain
    }
    assert converter_for(16500, types)(b"happy") == "happy"
    assert converter_for(16501, types)(b"{happy,sad}") == ["happy", "sad"]
    assert converter_for(16510, types)(b"42") == 42
    assert converter_for(16511, types)(b"{1,NULL,3}") == [1, None, 3]
    assert converter_for(16520, types)(b"7") == 7
    assert converter_for(16530, types)(b"(1,2)") == "(1,2)"  # not described: text


# The flat-array fast path must agree with the full parser on everything Postgres prints.
_ELEMENTS = st.one_of(st.none(), st.text(max_size=8), st.integers(-10**6, 10**6).map(str))


def _array_literal(items: list[str | None]) -> str:
    """How Postgres prints a one-dimensional text[]: quotes only where needed."""
    def element(item: str | None) -> str:
        if item is None:
            return "NULL"
        plain = item and item.upper() != "NULL" and not any(c in item for c in '{},"\\ \t\n\r\x0b\x0c')
        return item if plain else '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(element(item) for item in items) + "}"


@given(st.lists(_ELEMENTS, max_size=6))
def test_text_array_fast_path_agrees_with_the_parser(items: list[str | None]) -> None:
    literal = _array_literal(items)
    assert converter_for(1009)(literal.encode()) == parse_array(literal) == items


@given(st.lists(st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)), max_size=6))
def test_int_array_fast_path_agrees_with_the_parser(items: list[int | None]) -> None:
    literal = "{" + ",".join("NULL" if item is None else str(item) for item in items) + "}"
    assert converter_for(1007)(literal.encode()) == items
