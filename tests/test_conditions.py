"""The condition evaluator as a pure function: every operator, missing and null properties, types,
the refused forms, and agreement with a naive reference evaluator on generated conditions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.routing.conditions import Change, ConditionError, compile_condition


def holds(condition: dict[str, Any], new: dict[str, Any] | None = None, old: dict[str, Any] | None = None,
          mask: list[str] | None = None) -> bool:
    return compile_condition(condition).holds(Change(new, old, mask))


APPROVED = {"status": "approved", "assignee": None, "n": 3, "done": True}
REVIEW = {"status": "review", "assignee": "ann", "n": 2, "done": False}


# changed


def test_changed_reads_the_update_mask() -> None:
    assert holds({"changed": ["status"]}, APPROVED, REVIEW, ["status", "n"])
    assert holds({"changed": ["assignee", "status"]}, APPROVED, REVIEW, ["status"])  # any of them
    assert not holds({"changed": ["assignee"]}, APPROVED, REVIEW, ["status"])
    assert not holds({"changed": ["status"]}, APPROVED, REVIEW, [])


def test_changed_is_never_guessed_without_an_update_mask() -> None:
    # The rows differ, but without updateMask (no REPLICA IDENTITY FULL, creates, deletes) nothing is known.
    assert not holds({"changed": ["status"]}, APPROVED, REVIEW, None)
    assert not holds({"changed": ["status"]}, APPROVED, None, None)


# equals, not_equals, in


def test_equals_on_the_new_row_by_default_and_the_old_one_when_asked() -> None:
    assert holds({"property": "status", "equals": "approved"}, APPROVED, REVIEW)
    assert not holds({"property": "status", "equals": "review"}, APPROVED, REVIEW)
    assert holds({"property": "status", "equals": "review", "row": "old"}, APPROVED, REVIEW)
    assert holds({"property": "status", "equals": "approved", "row": "new"}, APPROVED, REVIEW)


def test_equals_is_type_strict() -> None:
    assert holds({"property": "n", "equals": 3}, APPROVED)
    assert holds({"property": "n", "equals": 3.0}, APPROVED)  # numbers compare as numbers
    assert not holds({"property": "n", "equals": "3"}, APPROVED)
    assert not holds({"property": "done", "equals": 1}, APPROVED)  # true is not 1
    assert holds({"property": "done", "equals": True}, APPROVED)
    assert not holds({"property": "n", "equals": True}, {"n": 1})  # nor is 1 true
    assert not holds({"property": "tags", "equals": "a"}, {"tags": ["a"]})  # a list equals no scalar
    assert not holds({"property": "status", "equals": "Approved"}, APPROVED)  # case matters


def test_not_equals() -> None:
    assert holds({"property": "status", "not_equals": "review"}, APPROVED)
    assert not holds({"property": "status", "not_equals": "approved"}, APPROVED)
    assert holds({"property": "assignee", "not_equals": "ann"}, APPROVED)  # null is not "ann"
    assert holds({"property": "n", "not_equals": "3"}, APPROVED)  # a string never equals a number


def test_in_a_list() -> None:
    assert holds({"property": "status", "in": ["approved", "dismissed"]}, APPROVED)
    assert not holds({"property": "status", "in": ["review", "dismissed"]}, APPROVED)
    assert holds({"property": "n", "in": [1, 3]}, APPROVED)
    assert not holds({"property": "done", "in": [1, 0]}, APPROVED)


# is_null


def test_is_null_and_is_not_null() -> None:
    assert holds({"property": "assignee", "is_null": True}, APPROVED)
    assert not holds({"property": "assignee", "is_null": False}, APPROVED)
    assert holds({"property": "assignee", "is_null": False}, REVIEW)
    assert not holds({"property": "status", "is_null": True}, REVIEW)
    assert not holds({"property": "done", "is_null": True}, {"done": False})  # false is a value, not null


# What is not there


@pytest.mark.parametrize("condition", [
    {"property": "missing", "equals": "x"}, {"property": "missing", "not_equals": "x"},
    {"property": "missing", "in": ["x"]}, {"property": "missing", "is_null": True},
    {"property": "missing", "is_null": False}])
def test_a_property_the_row_does_not_carry_matches_nothing(condition: dict[str, Any]) -> None:
    assert not holds(condition, APPROVED, REVIEW, ["status"])


@pytest.mark.parametrize("condition", [
    {"property": "status", "equals": "review", "row": "old"}, {"property": "status", "not_equals": "x", "row": "old"},
    {"property": "status", "in": ["review"], "row": "old"}, {"property": "status", "is_null": True, "row": "old"},
    {"property": "status", "is_null": False, "row": "old"}, {"property": "status", "from": "review", "to": "approved"},
    {"property": "status", "from": "review"}])
def test_a_condition_on_a_missing_old_row_does_not_match(condition: dict[str, Any]) -> None:
    """No REPLICA IDENTITY FULL: Postgres sends no old row on most updates (oldValue null, updateMask null)."""
    assert not holds(condition, APPROVED, None, None)
    assert not holds(condition, APPROVED, None, ["status"])  # not even when the mask is known


def test_a_condition_on_the_new_row_of_a_delete_does_not_match() -> None:
    assert not holds({"property": "status", "not_equals": "x"}, None, REVIEW)
    assert not holds({"property": "status", "is_null": False}, None, REVIEW)
    assert holds({"property": "status", "equals": "review", "row": "old"}, None, REVIEW)


# from -> to


def test_from_to() -> None:
    condition = {"property": "status", "from": "review", "to": "approved"}
    assert holds(condition, APPROVED, REVIEW, None)  # both rows known: it changed, the mask is not needed
    assert not holds(condition, REVIEW, APPROVED, ["status"])  # the other way round
    assert not holds(condition, APPROVED, {"status": "draft"}, ["status"])
    assert not holds(condition, APPROVED, {"n": 1}, ["status"])  # the old row without the property


def test_to_alone_needs_the_property_in_the_update_mask() -> None:
    condition = {"property": "status", "to": "approved"}
    assert holds(condition, APPROVED, REVIEW, ["status"])
    assert holds(condition, APPROVED, None, ["status"])  # the old row is not read
    assert not holds(condition, APPROVED, APPROVED, ["n"])  # approved already, something else changed
    assert not holds(condition, APPROVED, None, None)  # a create, or an update without FULL: not known to change
    assert not holds(condition, REVIEW, APPROVED, ["status"])


def test_from_alone() -> None:
    condition = {"property": "status", "from": "review"}
    assert holds(condition, APPROVED, REVIEW, ["status"])
    assert not holds(condition, REVIEW, REVIEW, ["n"])
    assert not holds(condition, None, REVIEW, None)  # a delete has no mask


# all_of, any_of


def test_all_of_and_any_of_combine() -> None:
    approved = {"property": "status", "to": "approved"}
    annes = {"property": "assignee", "equals": "ann", "row": "old"}
    assert holds({"all_of": [approved, annes]}, APPROVED, REVIEW, ["status"])
    assert not holds({"all_of": [approved, annes]}, APPROVED, {**REVIEW, "assignee": "bob"}, ["status"])
    assert holds({"any_of": [approved, annes]}, APPROVED, {**REVIEW, "assignee": "bob"}, ["status"])
    assert not holds({"any_of": [approved, {"changed": ["n"]}]}, REVIEW, REVIEW, ["done"])
    nested = {"any_of": [{"all_of": [approved, {"property": "n", "equals": 3}]}, {"changed": ["assignee"]}]}
    assert holds(nested, APPROVED, REVIEW, ["status"]) and holds(nested, REVIEW, REVIEW, ["assignee"])
    assert not holds(nested, {**APPROVED, "n": 4}, REVIEW, ["status"])


def test_the_seeds_record_status_events() -> None:
    """Record approved, unapproved, dismissed: status changed to accepted, review, dismissed."""
    approved = {"property": "status", "to": "accepted"}
    unapproved = {"property": "status", "from": "accepted", "to": "review"}
    accepted, review = {"status": "accepted"}, {"status": "review"}
    assert holds(approved, accepted, review, ["status"]) and not holds(approved, review, accepted, ["status"])
    assert holds(unapproved, review, accepted, ["status"]) and not holds(unapproved, accepted, review, ["status"])


# The refused forms


@pytest.mark.parametrize(("condition", "message"), [
    ("status", "when: a condition is a JSON object, not a string"),
    ({}, "when: no operator"),
    ({"property": "status", "equal": "x"}, "when: unknown key 'equal'"),
    ({"property": "status", "equals": "x", "in": ["y"]}, "when: 'in' does not go with 'equals'"),
    ({"changed": ["status"], "row": "old"}, "'row' does not go with 'changed'"),
    ({"property": "status", "from": "a", "row": "old"}, "'row' does not go with 'from'"),
    ({"equals": "x"}, 'when: "property" is missing'),
    ({"property": "", "equals": "x"}, "when.property: a property name is a non-empty string"),
    ({"property": 5, "equals": "x"}, "when.property: a property name is a non-empty string"),
    ({"property": "status", "equals": None}, "when.equals: null is not a value to compare with; use is_null"),
    ({"property": "status", "equals": {"a": 1}}, "when.equals: compare with a string, number or boolean, not an "
                                                 "object"),
    ({"property": "status", "in": []}, "when.in: an empty list; give at least one item"),
    ({"property": "status", "in": "approved"}, "when.in: a non-empty list, not a string"),
    ({"property": "status", "in": ["a", None]}, "when.in: null is not a value"),
    ({"property": "status", "is_null": "yes"}, "when.is_null: true or false, not a string"),
    ({"property": "status", "equals": "x", "row": "before"}, "when.row: use \"new\" or \"old\""),
    ({"property": "status", "from": "a", "to": "a"}, "from and to are the same value"),
    ({"changed": []}, "when.changed: an empty list"),
    ({"all_of": {"changed": ["a"]}}, "when.all_of: a non-empty list, not an object"),
    ({"any_of": [{"changed": ["a"]}, {"nope": 1}]}, "when.any_of[1]: unknown key 'nope'"),
    ({"all_of": [{"all_of": [{"all_of": [{"all_of": [{"all_of": [{"changed": ["a"]}]}]}]}]}]},
     "nested deeper than 5 levels"),
    ({"any_of": [{"changed": ["a"]}] * 100}, "more than 100 conditions"),
    ({"property": "status", "in": list(range(101))}, "when.in: more than 100 items"),
    ({"property": "status", "equals": "x" * 1001}, "longer than 1000 characters"),
])
def test_a_condition_not_of_the_form_is_refused_naming_where(condition: Any, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(condition)
    assert message in str(caught.value)


# Agreement with a naive reference


def _kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else \
        "string" if isinstance(value, str) else "other"


def _equal(value: Any, wanted: Any) -> bool:
    return _kind(value) == _kind(wanted) != "other" and value == wanted


def reference(condition: dict[str, Any], new: dict[str, Any] | None, old: dict[str, Any] | None,
              mask: list[str] | None) -> bool:
    """The rules of docs/guides/conditions.md, written as plainly as possible."""
    if "all_of" in condition:
        return all(reference(part, new, old, mask) for part in condition["all_of"])
    if "any_of" in condition:
        return any(reference(part, new, old, mask) for part in condition["any_of"])
    if "changed" in condition:
        return mask is not None and len(set(condition["changed"]) & set(mask)) > 0
    name = condition["property"]
    if "from" in condition or "to" in condition:
        start = "from" not in condition or (old is not None and name in old and _equal(old[name], condition["from"]))
        end = "to" not in condition or (new is not None and name in new and _equal(new[name], condition["to"]))
        moved = ("from" in condition and "to" in condition) or (mask is not None and name in mask)
        return start and end and moved
    row = old if condition.get("row") == "old" else new
    if row is None or name not in row:
        return False
    if "is_null" in condition:
        return (row[name] is None) == condition["is_null"]
    if "equals" in condition:
        return _equal(row[name], condition["equals"])
    if "not_equals" in condition:
        return not _equal(row[name], condition["not_equals"])
    return any(_equal(row[name], wanted) for wanted in condition["in"])


NAMES = st.sampled_from(["status", "assignee", "n"])
VALUES = st.sampled_from(["approved", "review", "", "1", 0, 1, 1.0, 2.5, True, False])
ROW_VALUES = st.one_of(VALUES, st.none(), st.just(["approved"]), st.just({"a": 1}))
ROWS = st.one_of(st.none(), st.dictionaries(NAMES, ROW_VALUES, max_size=3))
MASKS = st.one_of(st.none(), st.lists(NAMES, max_size=3, unique=True))
ROW = st.sampled_from([{}, {"row": "new"}, {"row": "old"}])


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    value = st.fixed_dictionaries({"property": NAMES}).flatmap(lambda base: st.one_of(
        st.builds(lambda v, r: {**base, "equals": v, **r}, VALUES, ROW),
        st.builds(lambda v, r: {**base, "not_equals": v, **r}, VALUES, ROW),
        st.builds(lambda v, r: {**base, "in": v, **r}, st.lists(VALUES, min_size=1, max_size=3), ROW),
        st.builds(lambda v, r: {**base, "is_null": v, **r}, st.booleans(), ROW),
        st.builds(lambda v: {**base, "from": v}, VALUES), st.builds(lambda v: {**base, "to": v}, VALUES),
        st.tuples(VALUES, VALUES).filter(lambda p: not _equal(p[0], p[1])).map(
            lambda p: {**base, "from": p[0], "to": p[1]})))
    return st.one_of(value, st.builds(lambda names: {"changed": names}, st.lists(NAMES, min_size=1, max_size=3)))


CONDITIONS = st.recursive(_leaf(), lambda inner: st.one_of(
    st.builds(lambda parts: {"all_of": parts}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda parts: {"any_of": parts}, st.lists(inner, min_size=1, max_size=3))), max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(condition=CONDITIONS, new=ROWS, old=ROWS, mask=MASKS)
def test_the_evaluator_agrees_with_the_naive_reference(condition: dict[str, Any], new: dict[str, Any] | None,
                                                       old: dict[str, Any] | None, mask: list[str] | None) -> None:
    try:
        compiled = compile_condition(condition)
    except ConditionError as exc:  # only the limits refuse a generated condition
        assert "deeper" in str(exc)
        return
    assert compiled.holds(Change(new, old, mask)) == reference(condition, new, old, mask)
