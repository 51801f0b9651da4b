"""The generated evaluator of conditions against its reference, the closures: the same verdict on every change."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from publisher.routing.conditions import Change, ConditionError, compile_condition, generate
from publisher.routing.generated import GENERATED_FROM

PROPERTIES = ["a", "b", "c"]
scalars = st.one_of(st.sampled_from(["x", "y", "", "1"]), st.integers(-2, 2), st.sampled_from([0.0, 1.0, 1.5]),
                    st.booleans())
rows = st.sampled_from(["new", "old"])


def _value_test(operator: str) -> st.SearchStrategy[dict[str, Any]]:
    argument = {"equals": scalars, "not_equals": scalars, "in": st.lists(scalars, min_size=1, max_size=4),
                "is_null": st.booleans()}[operator]
    return st.fixed_dictionaries({"property": st.sampled_from(PROPERTIES), operator: argument},
                                 optional={"row": rows})


leaves = st.one_of(
    st.fixed_dictionaries({"changed": st.lists(st.sampled_from(PROPERTIES), min_size=1, max_size=3)}),
    *(_value_test(operator) for operator in ("equals", "not_equals", "in", "is_null")),
    st.fixed_dictionaries({"property": st.sampled_from(PROPERTIES)}, optional={"from": scalars, "to": scalars}),
)
conditions = st.recursive(leaves, lambda parts: st.one_of(
    st.builds(lambda items: {"all_of": items}, st.lists(parts, min_size=1, max_size=4)),
    st.builds(lambda items: {"any_of": items}, st.lists(parts, min_size=1, max_size=4))), max_leaves=25)
carried = st.one_of(scalars, st.none(), st.just([1]), st.just({"k": 1}))  # lists and objects are never equal
states = st.one_of(st.none(), st.dictionaries(st.sampled_from(PROPERTIES), carried))
changes = st.builds(Change, states, states, st.one_of(st.none(), st.lists(st.sampled_from([*PROPERTIES, "z"]))))


def _compiled(raw: dict[str, Any]):  # type: ignore[no-untyped-def]
    try:
        return compile_condition(raw, generated=False)
    except ConditionError:  # from and to alike, or neither given, or nested too deep: not a condition
        assume(False)


@settings(max_examples=400, deadline=None)
@given(conditions, st.lists(changes, min_size=1, max_size=8))
def test_the_generated_function_agrees_with_the_closures(raw: dict[str, Any], events: list[Change]) -> None:
    reference = _compiled(raw)
    fast = generate(reference)
    for change in events:
        assert fast(change) is reference.test(change), (raw, change)


def test_a_large_condition_runs_generated_and_a_small_one_as_closures() -> None:
    large = {"any_of": [{"property": "a", "equals": str(n)} for n in range(GENERATED_FROM)]}
    small = {"property": "a", "equals": "1"}
    assert compile_condition(large).test.__code__.co_filename == "<condition>"
    assert compile_condition(small).test.__code__.co_filename != "<condition>"
    assert compile_condition(large).holds(Change({"a": "2"})) and not compile_condition(large).holds(Change({"a": 2}))


@pytest.mark.parametrize("text", ["x) or True or (x", "__import__('os')", "\\n    return True", "'", '"""'])
def test_what_a_user_wrote_is_never_source(text: str) -> None:
    raw = {"all_of": [{"property": text, "equals": text}, {"changed": [text]}, {"property": text, "in": [text, 1]},
                      {"property": text, "from": text, "to": "other"}]}
    condition = compile_condition(raw)
    assert not condition.holds(Change({"a": "b"}, {"a": "b"}, ["a"]))
    assert condition.holds(Change({text: "other"}, {text: text}, [text])) is False  # equals text fails: other
    assert compile_condition({"any_of": raw["all_of"]}).holds(Change({text: text}, None, [text]))
