"""The candidates' index by required value (publisher.routing.candidates): it prunes, routes exactly as ``route``."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from publisher.routing.candidates import candidates_for, required_equality, route_candidates
from publisher.routing.conditions import Change, ConditionError, compile_condition
from publisher.routing.matching import parse_items
from publisher.routing.recipients import EventFields, route
from publisher.store.rows import Integration
from tests.test_conditions import CONDITIONS
from tests.test_conditions import ROWS as ANY_ROWS


def integration(n: int, items: list[Any], organization: str = "acme", environment: str | None = None) -> Integration:
    return Integration(n, organization, f"i{n}", f"http://127.0.0.1:9/i{n}", parse_items(items), [],
                       environment=environment)


def event(key: str, operation: str, change: Change, organization: str = "acme",
          environment: str | None = None) -> EventFields:
    return EventFields("e1", organization, key, operation, f"{key}/1", environment, change)


def ids(found: list[Integration]) -> list[int]:
    return [i.id for i in found]


def test_the_required_equality_is_an_equals_or_in_on_the_new_row_alone_or_in_all_of() -> None:
    def required(raw: dict[str, Any]) -> Any:
        return required_equality(compile_condition(raw))

    assert required({"property": "ws", "equals": "a"}) == ("ws", ("a",))
    assert required({"property": "ws", "in": ["a", 7]}) == ("ws", ("a", 7))
    assert required({"all_of": [{"changed": ["s"]}, {"all_of": [{"property": "ws", "equals": 3}]}]}) == ("ws", (3,))
    assert required({"any_of": [{"property": "ws", "equals": "a"}, {"changed": ["s"]}]}) is None
    assert required({"property": "ws", "equals": "a", "row": "old"}) is None
    assert required({"property": "ws", "not_equals": "a"}) is None
    assert required({"property": "ws", "equals": 1.5}) is None  # a float: equal floats need not hash as written
    assert required({"property": "ws", "equals": True}) == ("ws", (True,))
    assert required({"property": "ws", "in": ["a", False]}) == ("ws", ("a", False))


def test_a_boolean_is_indexed_apart_from_the_number_python_finds_equal_to_it() -> None:
    """``true`` never equals ``1`` under ``same``, though ``True == 1`` (and hashes alike) in Python."""
    published = integration(1, [{"subscription": "docs:*", "when": {"property": "p", "equals": True}}])
    first = integration(2, [{"subscription": "docs:*", "when": {"property": "p", "equals": 1}}])
    found = candidates_for([published, first], "docs", "updated")
    assert found.always == [False, False]
    for value, wanted in ((True, [1]), (1, [2]), (1.0, [2]), (False, []), ("true", []), (None, []), ([1], [])):
        changed = event("docs", "updated", Change(new={"p": value}, old={}))
        assert ids(route_candidates(found, changed).recipients) == wanted, value
        assert ids(route([published, first], changed).recipients) == wanted, value


class CountingRow(dict[str, Any]):
    """A new row that counts how often a property is read: once per condition evaluated on it, or looked up."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingRow.reads += 1
        return super().get(key, default)


def own_workspace(n: int) -> list[Any]:
    return [{"subscription": "bench/*:*", "when": {"all_of": [
        {"property": "workspaceId", "equals": f"ws{n}"},
        {"any_of": [{"changed": ["status"]}, {"property": "status", "in": ["open", "in_review"]}]}]}}]


def test_with_100_indexed_integrations_only_the_matching_one_is_evaluated() -> None:
    integrations = [integration(n, own_workspace(n)) for n in range(100)]
    candidates = candidates_for(integrations, "bench/records", "updated")
    assert not any(candidates.always) and list(candidates.index) == ["workspaceId"]
    change = Change(CountingRow(workspaceId="ws42", status="open"), None, ["status"])

    CountingRow.reads = 0
    indexed = route_candidates(candidates, event("bench/records", "updated", change))
    indexed_reads = CountingRow.reads
    CountingRow.reads = 0
    plain = route(integrations, event("bench/records", "updated", change))

    assert ids(indexed.recipients) == ids(plain.recipients) == [42]
    assert ids(indexed.filtered) == ids(plain.filtered) == [n for n in range(100) if n != 42]
    assert CountingRow.reads >= 100  # every integration's condition read the row
    assert indexed_reads <= 3  # the lookup, then integration 42's workspace and status


def test_unindexed_integrations_and_other_environments_follow_route() -> None:
    integrations = [integration(0, own_workspace(0)), integration(1, ["bench/*:*"]),
                    integration(2, own_workspace(2), environment="test"),
                    integration(3, [*own_workspace(3), "bench/records:updated"]),  # two covering: always evaluated
                    integration(4, own_workspace(4), environment="prod")]
    candidates = candidates_for(integrations, "bench/records", "updated")
    assert candidates.always == [False, True, False, True, False]
    found = route_candidates(candidates, event("bench/records", "updated", Change({"workspaceId": "ws0"}),
                                               environment="prod"))
    assert (ids(found.recipients), ids(found.filtered)) == ([1, 3], [0, 4])


# Agreement with route, for generated integrations and events

NAMES = st.sampled_from(["status", "n"])
VALUES = st.sampled_from(["a", 1, 1.0, True, 0])  # few: an event's row often has the one wanted
KEYS = st.sampled_from(["docs", "notes"])
OPERATIONS = st.sampled_from(["created", "updated", "deleted"])
PATTERNS = st.builds(lambda key, ops: f"{key}:{ops}", st.sampled_from(["docs", "*", "*", "notes"]),
                     st.sampled_from(["*", "*", "created", "updated", "deleted", "created,updated"]))
ROW_OF = st.sampled_from([{}, {"row": "old"}])
EQUALITIES = st.builds(lambda name, operator, value, row: {"property": name, operator: value, **row}, NAMES,
                       st.sampled_from(["equals", "equals", "not_equals"]), VALUES, ROW_OF) | st.builds(
    lambda name, values, row: {"property": name, "in": values, **row}, NAMES, st.lists(VALUES, min_size=1, max_size=3),
    ROW_OF)
OTHERS = st.sampled_from([{"changed": ["status"]}, {"property": "status", "in": ["review", 1]},
                          {"property": "n", "is_null": False}, {"property": "status", "to": "approved"}]) | CONDITIONS
PLAIN = st.builds(lambda name, value: {"property": name, "equals": value}, NAMES, VALUES)  # the one indexed most
GROUPS = st.builds(lambda first, rest, at: {"all_of": [*rest[:at], first, *rest[at:]]}, EQUALITIES,
                   st.lists(OTHERS, max_size=2), st.integers(0, 2)) | st.builds(
    lambda first, other: {"any_of": [first, other]}, EQUALITIES, OTHERS)
WHEN = st.none() | PLAIN | EQUALITIES | GROUPS | CONDITIONS
SUBSCRIPTION = st.builds(lambda text, when: text if when is None else {"subscription": text, "when": when},
                         PATTERNS, WHEN)
SUBSCRIPTIONS = st.lists(SUBSCRIPTION, min_size=1, max_size=2)
INDEXED = st.builds(lambda text, when, more: [{"subscription": text, "when": when}, *more],
                    st.sampled_from(["*:*", "docs:*"]),
                    st.builds(lambda name, value: {"property": name, "equals": value}, NAMES, st.sampled_from(
                        ["a", 1, 0, True, False])) | EQUALITIES | GROUPS,
                    st.lists(SUBSCRIPTION, max_size=1))  # mostly one subscription: what the index may take
INTEGRATIONS = st.lists(st.tuples(INDEXED | SUBSCRIPTIONS, st.sampled_from(["acme", "acme", "acme", "other"]),
                                  st.sampled_from([None, None, "prod", "test"])), min_size=2, max_size=8)
ROWS = st.fixed_dictionaries({"status": st.sampled_from(["a", 1, True]), "n": st.sampled_from(["a", 1.0, 0, None])}
                             ) | st.dictionaries(NAMES, VALUES | st.none(), max_size=2) | st.none() | ANY_ROWS


def _built(generated: list[tuple[list[Any], str, str | None]]) -> list[Integration]:
    found = []
    for n, (items, organization, environment) in enumerate(generated):
        try:
            found.append(integration(n, items, organization, environment))
        except ConditionError:  # a generated condition past the nesting limit
            continue
    return found


@settings(max_examples=200, deadline=None)
@example(generated=[([{"subscription": "*:*", "when": {"property": "n", "equals": "a", "row": "old"}}], "acme", None)],
         key="docs", operation="updated", new={"n": 0}, old={"n": "a"}, mask=None, environment=None)
@given(generated=INTEGRATIONS, key=KEYS, operation=OPERATIONS, new=ROWS, old=ROWS,
       mask=st.none() | st.lists(NAMES, max_size=3, unique=True), environment=st.sampled_from([None, "prod"]))
def test_indexed_routing_is_route(generated: list[tuple[list[Any], str, str | None]], key: str, operation: str,
                                  new: dict[str, Any] | None, old: dict[str, Any] | None, mask: list[str] | None,
                                  environment: str | None) -> None:
    integrations = _built(generated)
    routed = event(key, operation, Change(new, old, mask), environment=environment)
    candidates = candidates_for(integrations, key, operation)
    indexed, plain = route_candidates(candidates, routed), route(integrations, routed)
    assert (ids(indexed.recipients), ids(indexed.filtered)) == (ids(plain.recipients), ids(plain.filtered))
