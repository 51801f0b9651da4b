"""The portal's "only when" rows as a pure mapping: rows -> the JSON condition the API stores, and back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from control.errors import RowsError
from control.portal.as_if import parse_as_if
from control.portal.condition_rows import (
    EntityRows,
    Row,
    condition_rows,
    parse_value,
    read_rows,
    rows_condition,
    show_value,
    split_list,
)
from publisher.routing.conditions import compile_condition

KINDS = {"status": "string", "points": "number", "done": "boolean", "meta": "json", "tags": "array"}


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# One row per operator: the row as the form shows it, and the condition it saves.
EVERY_OPERATOR = [
    (Row("status", "equals", "new", "approved"), {"property": "status", "equals": "approved"}),
    (Row("status", "equals", "old", "review"), {"property": "status", "equals": "review", "row": "old"}),
    (Row("status", "not_equals", "new", "draft"), {"property": "status", "not_equals": "draft"}),
    (Row("points", "not_equals", "old", "3"), {"property": "points", "not_equals": 3, "row": "old"}),
    (Row("status", "in", "new", "approved, dismissed"), {"property": "status", "in": ["approved", "dismissed"]}),
    (Row("points", "in", "old", "1, 2.5"), {"property": "points", "in": [1, 2.5], "row": "old"}),
    (Row("status", "is_null", "new"), {"property": "status", "is_null": True}),
    (Row("status", "not_null", "old"), {"property": "status", "is_null": False, "row": "old"}),
    (Row("status", "changed"), {"changed": ["status"]}),
    (Row("status", "from_to", "new", "review", "approved"), {"property": "status", "from": "review", "to": "approved"}),
    (Row("status", "from_to", "new", "review"), {"property": "status", "from": "review"}),
    (Row("status", "from_to", "new", "", "approved"), {"property": "status", "to": "approved"}),
    (Row("done", "equals", "new", "true"), {"property": "done", "equals": True}),
    (Row("meta", "equals", "new", '"7"'), {"property": "meta", "equals": "7"}),
    (Row("meta", "equals", "new", "7"), {"property": "meta", "equals": 7}),
    (Row("status", "equals", "new", '""'), {"property": "status", "equals": ""}),
    (Row("status", "in", "new", '"a, b", c'), {"property": "status", "in": ["a, b", "c"]}),
]


@pytest.mark.parametrize(("row", "condition"), EVERY_OPERATOR)
def test_every_operator_saves_its_condition_and_shows_back_as_the_same_row(row: Row, condition: dict) -> None:
    saved = rows_condition(EntityRows("all_of", [row]), KINDS)
    assert canonical(saved) == canonical(condition)
    compile_condition(saved)  # of the documented form
    shown = condition_rows(condition, KINDS)
    assert shown is not None and shown.rows == [row]


@pytest.mark.parametrize("combinator", ["all_of", "any_of"])
def test_several_rows_combine_and_come_back_in_order(combinator: str) -> None:
    rows = EntityRows(combinator, [row for row, _ in EVERY_OPERATOR])
    saved = rows_condition(rows, KINDS)
    assert canonical(saved) == canonical({combinator: [condition for _, condition in EVERY_OPERATOR]})
    compile_condition(saved)
    assert condition_rows(saved, KINDS) == rows


def test_blank_rows_say_nothing_and_no_rows_is_no_condition() -> None:
    assert rows_condition(EntityRows("any_of", [Row(), Row()]), KINDS) is None
    one = EntityRows("any_of", [Row(), Row("status", "changed"), Row()])
    assert rows_condition(one, KINDS) == {"changed": ["status"]}  # one row: the condition alone, no group


@pytest.mark.parametrize(("row", "words"), [
    (Row("", "equals", "new", "x"), "row 1: choose a property"),
    (Row("status", "from_to"), "row 1: from → to needs a from value, a to value or both"),
    (Row("status", "equals"), 'row 1: equals needs a value ("" for the empty string)'),
    (Row("status", "became", "new", "x"), "row 1: unknown operator 'became'"),
])
def test_rows_that_say_no_condition_are_named(row: Row, words: str) -> None:
    with pytest.raises(RowsError) as raised:
        rows_condition(EntityRows("all_of", [row]), KINDS)
    assert str(raised.value) == words


def test_a_value_that_does_not_fit_its_column_is_passed_on_for_the_checks_to_name() -> None:
    assert rows_condition(EntityRows("all_of", [Row("points", "equals", "new", "many")]), KINDS) == {
        "property": "points", "equals": "many"}
    assert parse_value("true", "number") == "true" and parse_value("7", "boolean") == "7"
    assert parse_value(" 7 ", "string") == "7" and parse_value("7", "string") == "7"


@pytest.mark.parametrize("value", ["", " padded", "a, b", '"quoted"', "7", "true", "null", "x", 7, 1.5, True, False])
@pytest.mark.parametrize("kind", ["string", "number", "boolean", "json"])
def test_a_shown_value_reads_back_as_itself_or_the_condition_stays_json(value: Any, kind: str) -> None:
    again = parse_value(show_value(value, kind), kind)
    when = {"property": "p", "equals": value}
    if type(again) is type(value) and again == value:
        assert condition_rows(when, {"p": kind}) == EntityRows("all_of", [Row("p", "equals", "new", show_value(value,
                                                                                                              kind))])
    else:  # only a number or boolean compared with a column of another kind, which the checks refuse anyway
        assert not isinstance(value, str) and kind not in ("json", "number" if type(value) in (int, float) else "")
        assert condition_rows(when, {"p": kind}) is None


def test_nested_groups_changed_of_several_and_spelled_out_defaults_are_not_rows() -> None:
    for when in ({"any_of": [{"all_of": [{"changed": ["a"]}, {"changed": ["b"]}]}, {"changed": ["c"]}]},
                 {"all_of": [{"property": "status", "to": "approved"}]}, {"changed": ["status", "points"]},
                 {"property": "status", "equals": "approved", "row": "new"}, {"property": "status", "equals": 7},
                 {"property": "status", "from": "a", "row": "old"}, {"all_of": []}, "status", None):
        assert condition_rows(when, KINDS) is None, when


def test_the_form_fields_become_rows_in_order() -> None:
    fields = {"only:flows/packets:combinator": "any_of", "only:flows/packets:1:property": "status",
              "only:flows/packets:1:operator": "from_to", "only:flows/packets:1:value": "review",
              "only:flows/packets:1:to": "approved", "only:flows/packets:0:property": "points",
              "only:flows/packets:0:operator": "in", "only:flows/packets:0:side": "old",
              "only:flows/packets:0:value": "1, 2", "only:docs:0:operator": "changed", "url": "x",
              "only:docs:99:property": "beyond the limit"}
    assert read_rows(fields) == {
        "flows/packets": EntityRows("any_of", [Row("points", "in", "old", "1, 2"),
                                               Row("status", "from_to", "new", "review", "approved")]),
        "docs": EntityRows("all_of", [Row("", "changed")])}


def test_lists_split_on_commas_outside_json_strings() -> None:
    assert split_list('a, "b, c", "d\\", e", , f') == ["a", ' "b, c"', ' "d\\", e"', " f"]


def test_the_sample_as_if_values_are_typed_by_column() -> None:
    assert parse_as_if("status=approved, points=7, done=true, meta=null", KINDS) == {
        "status": "approved", "points": 7, "done": True, "meta": None}
    assert parse_as_if('status="a, b"', KINDS) == {"status": "a, b"}
    assert parse_as_if(" ", KINDS) is None
    with pytest.raises(ValueError, match="as if, old row: write name=value, not 'approved'"):
        parse_as_if("approved", KINDS, "old")
