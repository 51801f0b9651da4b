"""The "only when ..." rows of the integration page: a subscription's condition as form rows, and back (pure).

Each row is one condition of ``publisher.routing.conditions`` on one property: equals, not equals, in
list, is null, is not null (on the new row or the old one), changed, or from -> to. The rows of
an entity combine with all of / any of. One row is saved as that condition alone, two or more
as ``{"all_of": [...]}`` or ``{"any_of": [...]}``; no rows, no condition.

Values are typed as the entity's column is (``publisher.routing.shapes`` kinds): ``7`` is a number for
an int column and a string for a text column. A string that would read as something else is
shown quoted as JSON (``"7"`` in a column of unknown type, ``""``, ``"a, b"`` in a list). A
value that does not fit the column is passed on as typed, and the checks the API runs
(``control.columns.checked_subscriptions``) name it: nothing is validated here twice.

A stored condition is shown as rows only when the rows save back to exactly the same JSON
(``condition_rows`` checks it); any other (nested groups, ``"row": "new"`` spelled out,
``changed`` of several properties, ...) stays in the JSON box, untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from control.errors import RowsError
from publisher.routing.conditions import Scalar

OPERATORS = {"equals": "equals", "not_equals": "not equals", "in": "in list", "is_null": "is null",
             "not_null": "is not null", "changed": "changed", "from_to": "from → to"}
COMBINATORS = {"all_of": "all of", "any_of": "any of"}
SIDES = {"new": "new row", "old": "old row"}
PREFIX = "only:"  # form fields: only:KEY:combinator, only:KEY:N:property|operator|side|value|to
_FIELD = re.compile(r"^only:(?P<key>.+):(?P<index>\d{1,3}):(?P<name>property|operator|side|value|to)$")
MAX_ROWS = 50

Kinds = Mapping[str, str]
"""Property name -> what JSON it arrives as (string, number, boolean, array, json); unknown: json."""


@dataclass
class Row:
    """One "only when" row as the form holds it: texts, as typed or as shown."""

    property: str = ""
    operator: str = "equals"
    side: str = "new"
    value: str = ""  # equals / not equals: the value; in list: values, comma separated; from -> to: from
    to: str = ""  # from -> to: to

    def blank(self) -> bool:
        return not (self.property or self.value.strip() or self.to.strip())


@dataclass
class EntityRows:
    """An entity's rows and how they combine."""

    combinator: str = "all_of"
    rows: list[Row] = field(default_factory=list)


# Values: text in the form <-> JSON scalar


def _literal(text: str) -> Scalar | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, bool | int | float | str) else None


def _kind_of(value: Scalar) -> str:
    return "boolean" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


def parse_value(text: str, kind: str = "json") -> Scalar:
    """A typed value: a JSON string as written (``"7"``), else as the column's kind reads it, else the text."""
    text = text.strip()
    if text.startswith('"') and isinstance(quoted := _literal(text), str):
        return quoted
    if kind == "string":
        return text
    literal = _literal(text)
    if literal is not None and (kind in ("json", "array") or _kind_of(literal) == kind):
        return literal
    return text  # does not fit the column: the checks name it


def _identical(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def show_value(value: Any, kind: str = "json") -> str:
    """The text ``parse_value`` reads back as ``value`` (a string is quoted only when it must be)."""
    if isinstance(value, str):
        plain = value and value == value.strip() and not value.startswith('"') and "," not in value
        if plain and _identical(parse_value(value, kind), value):
            return value
    return orjson.dumps(value).decode()


def split_list(text: str) -> list[str]:
    """Comma-separated items; a comma inside a JSON string (``"a, b"``) does not split."""
    items: list[str] = []
    current, quoted, escaped = "", False, False
    for char in text:
        if char == "," and not quoted:
            items.append(current)
            current = ""
            continue
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        current += char
    return [item for item in [*items, current] if item.strip()]


def parse_list(text: str, kind: str = "json") -> list[Scalar]:
    return [parse_value(item, kind) for item in split_list(text)]


def show_list(values: Any, kind: str = "json") -> str:
    return ", ".join(show_value(value, kind) for value in values) if isinstance(values, list) else ""


# Rows -> the JSON condition


def row_condition(row: Row, kind: str, number: int = 1) -> dict[str, Any]:
    """The condition one row says; ``RowsError`` when it says none (``number`` names the row)."""
    if not row.property:
        raise RowsError(f"row {number}: choose a property")
    if row.operator == "changed":
        return {"changed": [row.property]}
    if row.operator == "from_to":
        return _transition(row, kind, number)
    condition: dict[str, Any] = {"property": row.property}
    if row.side == "old":
        condition["row"] = "old"
    if row.operator in ("is_null", "not_null"):
        condition["is_null"] = row.operator == "is_null"
    elif row.operator == "in":
        condition["in"] = parse_list(row.value, kind)
    elif row.operator in ("equals", "not_equals"):
        if not row.value.strip():
            raise RowsError(f'row {number}: {OPERATORS[row.operator]} needs a value ("" for the empty string)')
        condition[row.operator] = parse_value(row.value, kind)
    else:
        raise RowsError(f"row {number}: unknown operator {row.operator[:40]!r}")
    return condition


def _transition(row: Row, kind: str, number: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"property": row.property}
    if row.value.strip():
        condition["from"] = parse_value(row.value, kind)
    if row.to.strip():
        condition["to"] = parse_value(row.to, kind)
    if len(condition) == 1:
        raise RowsError(f"row {number}: from → to needs a from value, a to value or both")
    return condition


def rows_condition(rows: EntityRows, kinds: Kinds) -> dict[str, Any] | None:
    """The JSON condition of an entity's rows (blank rows skipped); None when there are none."""
    filled = [(number, row) for number, row in enumerate(rows.rows, 1) if not row.blank()]
    parts = [row_condition(row, kinds.get(row.property, "json"), number) for number, row in filled]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {rows.combinator if rows.combinator in COMBINATORS else "all_of": parts}


# The JSON condition -> rows


def _leaf_row(leaf: Any, kinds: Kinds) -> Row | None:
    if not isinstance(leaf, dict):
        return None
    changed = leaf.get("changed")
    if isinstance(changed, list) and len(changed) == 1 and isinstance(changed[0], str):
        return Row(changed[0], "changed")
    name = leaf.get("property")
    if not isinstance(name, str):
        return None
    kind, side = kinds.get(name, "json"), "old" if leaf.get("row") == "old" else "new"
    if "from" in leaf or "to" in leaf:
        start, end = (show_value(leaf[part], kind) if part in leaf else "" for part in ("from", "to"))
        return Row(name, "from_to", side, start, end)
    if "is_null" in leaf:
        return Row(name, "is_null" if leaf["is_null"] is True else "not_null", side)
    if "in" in leaf:
        return Row(name, "in", side, show_list(leaf["in"], kind))
    operator = next((op for op in ("equals", "not_equals") if op in leaf), None)
    return None if operator is None else Row(name, operator, side, show_value(leaf[operator], kind))


def condition_rows(when: Any, kinds: Kinds) -> EntityRows | None:
    """The rows that save back to exactly ``when``; None when no rows can (it stays JSON)."""
    if isinstance(when, dict) and len(when) == 1 and next(iter(when)) in COMBINATORS:
        combinator, parts = next(iter(when.items()))
        if not isinstance(parts, list) or len(parts) < 2:
            return None
    else:
        combinator, parts = "all_of", [when]
    rows = [_leaf_row(part, kinds) for part in parts]
    if any(row is None for row in rows) or len(rows) > MAX_ROWS:
        return None
    shown = EntityRows(combinator, [row for row in rows if row is not None])
    try:
        again = rows_condition(shown, kinds)
    except RowsError:
        return None
    return shown if _canonical(again) == _canonical(when) else None


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# The form's fields


def read_rows(fields: Mapping[str, str]) -> dict[str, EntityRows]:
    """Every entity's rows from the form's ``only:...`` fields, in row order (at most ``MAX_ROWS`` each)."""
    found: dict[str, dict[int, Row]] = {}
    combinators: dict[str, str] = {}
    for name, value in fields.items():
        if name.startswith(PREFIX) and name.endswith(":combinator"):
            combinators[name[len(PREFIX):-len(":combinator")]] = value
        elif (match := _FIELD.match(name)) and int(match["index"]) < MAX_ROWS:
            row = found.setdefault(match["key"], {}).setdefault(int(match["index"]), Row())
            setattr(row, match["name"], value)
    keys = dict.fromkeys([*combinators, *found])
    return {key: EntityRows(combinators.get(key, "all_of"),
                            [row for _, row in sorted(found.get(key, {}).items())]) for key in keys}
