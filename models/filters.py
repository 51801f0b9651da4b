"""A backfill's row filter: a small, safe subset of SQL ``WHERE`` (pure).

Conditions over the table's columns joined by ``AND``::

    status = 'open' AND created_at >= '2026-01-01' AND archived IS NOT NULL AND kind IN ('a', 'b')

Operators: ``= <> != < <= > >=``, ``IS [NOT] NULL``, ``IN (...)``; values are numbers,
``'quoted text'`` (``''`` for a quote), ``true``, ``false``. Column names are plain or
``"double quoted"``. The filter never reaches the database as text: the capture builds the query
from the parsed conditions, names as identifiers and values as parameters, so a filter cannot
run anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.errors import WalhookError

_TOKEN = re.compile(r"""\s*(?:(?P<quoted>"(?:[^"]|"")+")|(?P<text>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)
                        |(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[(),])|(?P<word>[^\W\d]\w*))""", re.VERBOSE)
MAX_FILTER_LENGTH = 2000


class FilterError(WalhookError):
    """A backfill filter that cannot be read; the message says where."""


@dataclass(frozen=True)
class Condition:
    """``column op values``: one value for comparisons, several for IN, none for IS [NOT] NULL."""

    column: str
    op: str  # =, <>, <, <=, >, >=, in, is null, is not null
    values: tuple[str, ...] = ()


def parse_filter(text: str) -> list[Condition]:
    """The conditions of ``text``; ``FilterError`` naming what is wrong."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is longer than {MAX_FILTER_LENGTH} characters")
    tokens = _tokens(text)
    conditions: list[Condition] = []
    while True:
        condition, tokens = _condition(tokens, text)
        conditions.append(condition)
        if not tokens:
            return conditions
        if tokens[0] != ("word", "and"):
            raise FilterError(f"filter {text!r}: expected AND, found {tokens[0][1]!r} (only AND joins conditions)")
        tokens = tokens[1:]


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError(f"filter {text!r}: cannot read from {text[position:position + 20].strip()!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        tokens.append((kind, value.lower() if kind == "word" else value))
        position = match.end()
    if not tokens:
        raise FilterError("filter is empty")
    return tokens


def _condition(tokens: list[tuple[str, str]], text: str) -> tuple[Condition, list[tuple[str, str]]]:
    column = _column(tokens[0], text)
    rest = tokens[1:]
    words = [value for _, value in rest[:3]]
    if words[:3] == ["is", "not", "null"]:
        return Condition(column, "is not null"), rest[3:]
    if words[:2] == ["is", "null"]:
        return Condition(column, "is null"), rest[2:]
    if words[:1] == ["in"]:
        return _in_list(column, rest[1:], text)
    if not rest or rest[0][0] != "op":
        raise FilterError(f"filter {text!r}: expected an operator after {column!r}")
    op = "<>" if rest[0][1] == "!=" else rest[0][1]
    if len(rest) < 2:
        raise FilterError(f"filter {text!r}: expected a value after {column} {op}")
    return Condition(column, op, (_value(rest[1], text),)), rest[2:]


def _in_list(column: str, tokens: list[tuple[str, str]], text: str) -> tuple[Condition, list[tuple[str, str]]]:
    if not tokens or tokens[0] != ("punct", "("):
        raise FilterError(f"filter {text!r}: expected ( after {column} IN")
    values, position = [], 1
    while position < len(tokens):
        values.append(_value(tokens[position], text))
        separator = tokens[position + 1] if position + 1 < len(tokens) else ("", "")
        position += 2
        if separator == ("punct", ")"):
            return Condition(column, "in", tuple(values)), tokens[position:]
        if separator != ("punct", ","):
            break
    raise FilterError(f"filter {text!r}: the IN list of {column} is not closed")


def _column(token: tuple[str, str], text: str) -> str:
    kind, value = token
    if kind == "quoted":
        return value[1:-1].replace('""', '"')
    if kind == "word" and value not in ("and", "is", "not", "null", "in", "true", "false"):
        return value
    raise FilterError(f"filter {text!r}: expected a column name, found {value!r}")


def _value(token: tuple[str, str], text: str) -> str:
    kind, value = token
    if kind == "text":
        return value[1:-1].replace("''", "'")
    if kind == "number" or (kind == "word" and value in ("true", "false")):
        return value
    raise FilterError(f"filter {text!r}: expected a value ('text', a number, true or false), found {value!r}")


def filter_columns(conditions: list[Condition]) -> set[str]:
    return {condition.column for condition in conditions}
