"""The candidates for one (entity key, operation), indexed by the value their conditions require.

With many integrations subscribed to the same entity key, each picking its own events with an
equality (``{"property": "workspaceId", "equals": "ws7"}``), evaluating every one's conditions on
every event made routing linear in their number. So the candidates whose only covering
subscription requires the new row to carry a property equal to one of a few values are kept in an
index ``{property: {value: positions}}``: an event's value is looked up once per distinct
property, the integrations found there (and those the index knows nothing of) are evaluated as
``routing.route`` would, and the others are filtered out without evaluating anything (they cover
the key and operation and their condition cannot hold). The index only prunes: the result is
``route``'s, in the candidates' order (tests/test_candidates.py checks it against ``route``).

Only values whose equality under ``conditions.same`` is a plain hash lookup are indexed: strings,
integers (a number equals a number, ``1`` equals ``1.0``, whose hashes agree) and booleans, kept
under a key of their own since ``true`` never equals ``1`` there (while ``True == 1`` in Python).
Floats and anything under ``any_of`` stay evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from publisher.routing.conditions import AllOf, Condition, Value
from publisher.routing.matching import Subscription
from publisher.routing.recipients import EventFields, Routed, route
from publisher.store.rows import Integration

Indexed = str | int | bool
# An event's float looks up the integer it equals (equal numbers hash alike); a boolean its own key.
Looked = str | int | float | tuple[type, bool]
Requirement = tuple[str, tuple[Indexed, ...]]
_MISSING = object()


def required_equality(condition: Condition) -> Requirement | None:
    """``(property, values)``: ``condition`` holds only when the new row carries ``property`` equal to one of
    ``values`` (an ``equals`` or ``in`` on the new row, alone or a part of ``all_of``, never under ``any_of``),
    every value a string, an integer or a boolean. None: no such requirement is known."""
    if isinstance(condition, Value):
        if condition.old_row or condition.operator not in ("equals", "in"):
            return None
        if all(type(value) in (str, int, bool) for value in condition.values):
            return condition.property, cast(tuple[Indexed, ...], condition.values)  # checked just above
        return None
    if isinstance(condition, AllOf):
        for part in condition.parts:
            found = required_equality(part)
            if found is not None:
                return found
    return None


@dataclass(frozen=True, slots=True)
class Candidates:
    """The integrations subscribed to ``entity_key`` and ``operation`` (conditions aside), in order, and their index."""

    entity_key: str
    operation: str
    integrations: list[Integration]
    always: list[bool] = field(default_factory=list)  # per position: evaluated on every event
    index: dict[str, dict[Looked, list[int]]] = field(default_factory=dict)  # property -> value -> positions


def candidates_for(enabled: Iterable[Integration], entity_key: str, operation: str) -> Candidates:
    """The ``enabled`` integrations with a subscription covering the key and operation, indexed."""
    found = Candidates(entity_key, operation, [])
    for integration in enabled:
        covering = [s for s in integration.subscriptions if s.covers(entity_key, operation)]
        if not covering:
            continue
        position = len(found.integrations)
        found.integrations.append(integration)
        required = _requirement(covering)
        found.always.append(required is None)
        if required is not None:
            by_value = found.index.setdefault(required[0], {})
            keys = (key for key in map(_key, required[1]) if key is not None)  # each one is: str, int or bool
            for key in dict.fromkeys(keys):  # an ``in`` naming a value twice: one entry
                by_value.setdefault(key, []).append(position)
    return found


def _requirement(covering: list[Subscription]) -> Requirement | None:
    """Only with exactly one covering subscription: with two, the other one may hold."""
    if len(covering) != 1 or covering[0].condition is None:
        return None
    return required_equality(covering[0].condition)


def route_candidates(candidates: Candidates, event: EventFields) -> Routed:
    """``route(candidates.integrations, event)``, evaluating only the integrations the index cannot rule out."""
    if not candidates.index or event.target_integration is not None or (
            event.entity_key, event.operation) != (candidates.entity_key, candidates.operation):
        return route(candidates.integrations, event)
    return route(candidates.integrations, event, _to_evaluate(candidates, event.change.new))


def _key(value: Any) -> Looked | None:
    """Where a value stands in the index: a boolean apart from the number Python finds equal to it; None for
    a value no indexed one equals under ``same`` (null, a list, an object)."""
    if type(value) is bool:
        return (bool, value)
    if isinstance(value, str | int | float):
        return value
    return None


def _to_evaluate(candidates: Candidates, new: Any) -> list[bool]:
    """Per position: the ones evaluated always, and the indexed ones whose value the new row carries."""
    evaluate = candidates.always.copy()
    if new is None:  # no new row (a delete): no equality on it can hold
        return evaluate
    for name, by_value in candidates.index.items():
        key = _key(new.get(name, _MISSING))
        if key is not None:
            for position in by_value.get(key, ()):
                evaluate[position] = True
    return evaluate
