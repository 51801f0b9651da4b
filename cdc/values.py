"""Turn Postgres text-format values into typed JSON values.

One converter per type OID, resolved once per Relation message (``converter_for``), never
per value. The replication session runs with ``DateStyle=ISO``, ``TimeZone=UTC``,
``IntervalStyle=iso_8601`` and ``extra_float_digits=3`` (see ``cdc.transport``), so the
text forms below are fixed and exact.

Choices: numeric and money stay strings (exact); NaN and +/-Infinity floats become the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; bytea becomes base64; timestamps
become ISO 8601 (``2024-05-01T12:00:00.5Z`` for timestamptz; years BC counted the ISO way,
1 BC = ``0000``); json/jsonb are embedded as the JSON text Postgres sent (``orjson.Fragment``:
never re-parsed, so no depth limit and no cost); any type without a converter keeps its
text form.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

import orjson

Converter = Callable[[bytes], Any]


# Converters run once per value, so the common ones are C-level callables, not Python functions.
_text: Converter = bytes.decode  # UTF-8, strict
_bool: Converter = b"t".__eq__


def _float(raw: bytes) -> float | str:
    value = float(raw)
    if isfinite(value):
        return value
    return raw.decode()  # 'NaN', 'Infinity', '-Infinity': JSON has no such numbers


def _bytea(raw: bytes) -> str:
    # Postgres' default bytea_output is hex: '\x' followed by two hex digits per byte.
    return base64.b64encode(bytes.fromhex(raw[2:].decode("ascii"))).decode("ascii")


def _timestamp(raw: bytes) -> str:
    text = raw.decode("ascii")
    if text.endswith(" BC"):
        text = _astronomical_year(text[:-3])
    return text if text.endswith("infinity") else text.replace(" ", "T", 1)


def _astronomical_year(text: str) -> str:
    """``'4713-01-01 ...'`` BC -> ``'-4712-01-01 ...'``: ISO 8601 counts 1 BC as year 0."""
    year, rest = text.split("-", 1)
    astronomical = 1 - int(year)
    return f"{astronomical:05d}-{rest}" if astronomical < 0 else f"{astronomical:04d}-{rest}"


def _timestamptz(raw: bytes) -> str:
    text = raw.decode("ascii")
    if text[-3:] == "+00" and text[10:11] == " ":  # the common case under TimeZone=UTC, in one step
        return f"{text[:10]}T{text[11:-3]}Z"
    text = _timestamp(raw)
    if text.endswith("+00"):
        return text[:-3] + "Z"
    if len(text) > 3 and text[-3] in "+-":  # '+05' -> '+05:00'
        return text + ":00"
    return text


# The converters the compiled row path does itself (cdc.rowpath); every other one it calls.
text_converter, bool_converter, float_converter = _text, _bool, _float
timestamp_converter, timestamptz_converter = _timestamp, _timestamptz

SCALAR_CONVERTERS: dict[int, Converter] = {
    16: _bool,
    17: _bytea,
    20: int, 21: int, 23: int, 26: int,
    700: _float, 701: _float,
    114: orjson.Fragment, 3802: orjson.Fragment,
    1114: _timestamp, 1184: _timestamptz,
}

# Array type OID -> element type OID, for the built-in types.
ARRAY_ELEMENTS: dict[int, int] = {
    1000: 16, 1001: 17, 1005: 21, 1007: 23, 1016: 20, 1028: 26, 1021: 700, 1022: 701,
    1231: 1700, 1009: 25, 1015: 1043, 1014: 1042, 1002: 18, 1003: 19, 2951: 2950,
    199: 114, 3807: 3802, 1182: 1082, 1183: 1083, 1270: 1266, 1115: 1114, 1185: 1184,
    1187: 1186, 1041: 869, 651: 650, 791: 790, 1040: 829,
}


@dataclass(frozen=True, slots=True)
class UserType:
    """What the catalog says about a type that is not built in: a domain's base type or an array's element."""

    oid: int
    base_oid: int = 0  # set for domains
    element_oid: int = 0  # set for array types


def is_builtin(type_oid: int) -> bool:
    return type_oid in SCALAR_CONVERTERS or type_oid in ARRAY_ELEMENTS or type_oid < 16384


def converter_for(type_oid: int, user_types: Mapping[int, UserType] | None = None) -> Converter:
    """The converter for ``type_oid``: domains convert as their base type, arrays element-wise,
    and every other type (enums, geometric types, ranges...) keeps its text form."""
    scalar = SCALAR_CONVERTERS.get(type_oid)
    if scalar is not None:
        return scalar
    element = ARRAY_ELEMENTS.get(type_oid)
    if element is not None:
        return _array_converter(converter_for(element, user_types))
    user_type = (user_types or {}).get(type_oid)
    if user_type is not None and user_type.base_oid:
        return converter_for(user_type.base_oid, user_types)
    if user_type is not None and user_type.element_oid:
        return _array_converter(converter_for(user_type.element_oid, user_types))
    return _text


def _array_converter(element: Converter) -> Converter:
    def convert(raw: bytes) -> list[Any]:
        text = raw.decode("utf-8")
        if '"' in text or "{" in text[1:] or text[0] != "{":  # quoted, nested or with bounds: parse properly
            return _convert_nested(parse_array(text), element)
        # A flat array of unquoted elements (the common case): no quoting, so NULL is always SQL NULL.
        items = text[1:-1].split(",") if len(text) > 2 else []
        if element is _text:
            return [None if item == "NULL" else item for item in items]
        return [None if item == "NULL" else element(item.encode()) for item in items]
    convert.element = element  # type: ignore[attr-defined]  # what the compiled row path reads
    return convert


def _convert_nested(items: list[Any], element: Converter) -> list[Any]:
    return [
        None if item is None else _convert_nested(item, element) if isinstance(item, list)
        else element(item.encode("utf-8"))
        for item in items
    ]


def parse_array(text: str, delimiter: str = ",") -> list[Any]:
    """Parse a Postgres array literal into nested lists of strings and ``None``.

    Handles multi-dimensional arrays, quoted elements with backslash escapes, unquoted
    ``NULL`` and an explicit bounds prefix such as ``[0:1]={1,2}``.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1:]
    value, end = _parse_level(text, 0, delimiter)
    if end != len(text):
        raise ValueError(f"trailing characters in array literal {text!r}")
    return value


def _parse_level(text: str, pos: int, delimiter: str) -> tuple[list[Any], int]:
    if text[pos] != "{":
        raise ValueError(f"array literal must start with '{{': {text!r}")
    items: list[Any] = []
    pos += 1
    if text[pos] == "}":
        return items, pos + 1
    while True:
        if text[pos] == "{":
            item, pos = _parse_level(text, pos, delimiter)
            items.append(item)
        elif text[pos] == '"':
            item_text, pos = _parse_quoted(text, pos + 1)
            items.append(item_text)
        else:
            end = pos
            while text[end] not in (delimiter, "}"):
                end += 1
            word = text[pos:end].strip(" \t\n\r\v\f")  # what Postgres counts as space, no more
            items.append(None if word.upper() == "NULL" else word)
            pos = end
        if text[pos] == "}":
            return items, pos + 1
        pos += 1  # the delimiter


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    chars = []
    while text[pos] != '"':
        if text[pos] == "\\":
            pos += 1
        chars.append(text[pos])
        pos += 1
    return "".join(chars), pos + 1
