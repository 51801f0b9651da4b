"""Conditions on a subscription: "only when status changed to approved", not every update.

A condition is a small JSON object, evaluated on the event before a delivery is recorded. No
expression language, no code: each object has exactly one of these shapes.

    {"changed": ["status", "assignee"]}                 the update's updateMask names any of them
    {"property": "status", "equals": "approved"}        on the new row; "row": "old" for the old one
    {"property": "status", "not_equals": "draft"}
    {"property": "status", "in": ["approved", "dismissed"]}
    {"property": "assignee", "is_null": true}           false: is not null
    {"property": "status", "from": "review", "to": "approved"}   from, to, or both
    {"all_of": [condition, ...]}     {"any_of": [condition, ...]}

Values are strings, numbers or booleans, compared as the event carries them (type-strict: ``1``
never equals ``true`` nor ``"1"``). The rules for what is not there:

* a missing row (``value`` of a delete, ``oldValue`` of a create, or an old row Postgres did not
  send without REPLICA IDENTITY FULL) or a property the row does not carry: the condition does
  not hold, whatever the operator (``not_equals`` and ``is_null`` included);
* ``changed`` reads ``updateMask`` only: when it is null (creates, deletes, updates without FULL)
  nothing is known to have changed, so it does not hold - it is never guessed;
* ``from`` + ``to`` holds when the old row has ``from`` and the new row has ``to``; ``to`` (or
  ``from``) alone also needs the property in ``updateMask``.

``compile_condition`` checks the form and builds the evaluator once; ``Condition.holds`` is pure.
A large condition runs as one generated function (``publisher.routing.generated``), the closures of
``publisher.routing.evaluation`` its reference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from publisher.errors import SubscriptionError
from publisher.routing import evaluation
from publisher.routing.generated import GENERATED_FROM, Source, joined, mask_names, row_has

Scalar = str | int | float | bool
Row = Mapping[str, Any]

MAX_DEPTH = 5
MAX_NODES = 100
MAX_LIST = 100
MAX_TEXT = 1000
_VALUE_OPERATORS = ("equals", "not_equals", "in", "is_null")
_OPERATORS = ("changed", *_VALUE_OPERATORS, "from", "to", "all_of", "any_of")


class ConditionError(SubscriptionError):
    """A condition that is not of the documented form, or that cannot hold for its entity."""


@dataclass(frozen=True, slots=True)
class Change:
    """What conditions read from an event: the rows' properties (None: no such row) and ``updateMask``."""

    new: Row | None = None
    old: Row | None = None
    mask: Sequence[str] | None = None


NO_CHANGE = Change()


def same(value: Any, wanted: Scalar) -> bool:
    """JSON equality, type-strict: booleans only equal booleans, numbers compare as numbers."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, int | float):
        return isinstance(value, int | float) and value == wanted
    return isinstance(value, str) and value == wanted


@dataclass(frozen=True, slots=True)
class Compared:
    """One property a condition compares, for checking it against the entity's columns."""

    where: str
    property: str
    values: tuple[Scalar, ...] = ()
    null_test: bool = False  # is_null: true


Test = Callable[[Change], bool]


class Condition(ABC):
    """A compiled condition: ``test`` (and ``holds``) is a pure function of the event's :class:`Change`.

    Each node builds its ``test`` once, as closures over what it compares (``publisher.routing.evaluation``),
    so evaluating it on an event is a few attribute reads and comparisons, not a walk of the JSON.
    """

    __slots__ = ()
    test: Test

    def holds(self, change: Change) -> bool:
        return self.test(change)

    @abstractmethod
    def compared(self) -> Iterator[Compared]:
        """Every property this condition reads, with the values it compares it to."""

    @abstractmethod
    def _build(self) -> Test:
        """The node's test, built once from what it compares."""

    @abstractmethod
    def _expression(self, source: Source) -> str:
        """The node's test as a Python expression of ``new``, ``old`` and ``mask`` (constants from ``source``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", self._build())


@dataclass(frozen=True, slots=True)
class Changed(Condition):
    where: str
    properties: tuple[str, ...]
    test: Test = field(init=False, repr=False, compare=False)

    def _build(self) -> Test:
        return evaluation.changed(self.properties)

    def _expression(self, source: Source) -> str:
        return mask_names(source.constant(frozenset(self.properties)))

    def compared(self) -> Iterator[Compared]:
        return (Compared(self.where, name) for name in self.properties)


@dataclass(frozen=True, slots=True)
class Value(Condition):
    """equals / not_equals / in / is_null on one row."""

    where: str
    property: str
    old_row: bool
    operator: str
    values: tuple[Scalar, ...]
    null: bool = False
    test: Test = field(init=False, repr=False, compare=False)

    def _build(self) -> Test:
        if self.operator == "is_null":
            return evaluation.is_null(self.property, self.old_row, self.null)
        return evaluation.one_of(self.property, self.old_row, self.values, negate=self.operator == "not_equals")

    def _expression(self, source: Source) -> str:
        row, name = "old" if self.old_row else "new", source.constant(self.property)
        if self.operator == "is_null":
            return row_has(row, name, "x is None" if self.null else "x is not None")
        negate = self.operator == "not_equals"
        if len(self.values) == 1 and type(self.values[0]) is str:  # a string only equals an equal string
            return row_has(row, name, f"x {'!=' if negate else '=='} {source.constant(self.values[0])}")
        return row_has(row, name, f"{'not ' if negate else ''}{_one_of(self.values, source)}")

    def compared(self) -> Iterator[Compared]:
        yield Compared(self.where, self.property, self.values, self.operator == "is_null" and self.null)


def _one_of(values: tuple[Scalar, ...], source: Source) -> str:
    """``x`` is one of ``values``, type-strict, as an expression: inline for strings alone or numbers alone."""
    kinds = {type(value) for value in values}
    if kinds == {str}:
        return f"(x.__class__ is str and x in {source.constant(frozenset(values))})"
    if kinds <= {int, float}:
        return f"((x.__class__ is int or x.__class__ is float) and x in {source.constant(frozenset(values))})"
    return f"{source.constant(evaluation.matcher(values))}(x)"


@dataclass(frozen=True, slots=True)
class Transition(Condition):
    """from -> to of one property; either end may be left open (then updateMask must name it)."""

    where: str
    property: str
    start: tuple[Scalar, ...]  # () or (value,)
    end: tuple[Scalar, ...]
    test: Test = field(init=False, repr=False, compare=False)

    def _build(self) -> Test:
        return evaluation.transition(self.property, self.start, self.end)

    def _expression(self, source: Source) -> str:
        name = source.constant(self.property)
        parts = [row_has("old", name, f"{source.constant(evaluation.matcher(self.start))}(x)")] if self.start else []
        parts += [row_has("new", name, f"{source.constant(evaluation.matcher(self.end))}(x)")] if self.end else []
        if not (self.start and self.end):
            parts.append(mask_names(source.constant(frozenset([self.property]))))
        return joined(parts, "and")

    def compared(self) -> Iterator[Compared]:
        yield Compared(self.where, self.property, (*self.start, *self.end))


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    parts: tuple[Condition, ...]
    test: Test = field(init=False, repr=False, compare=False)

    def _build(self) -> Test:
        return evaluation.all_of(tuple(part.test for part in self.parts))

    def _expression(self, source: Source) -> str:
        return joined([part._expression(source) for part in self.parts], "and")

    def compared(self) -> Iterator[Compared]:
        return (found for part in self.parts for found in part.compared())


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...]
    test: Test = field(init=False, repr=False, compare=False)

    def _build(self) -> Test:
        return evaluation.any_of(tuple(part.test for part in self.parts))

    def _expression(self, source: Source) -> str:
        return joined([part._expression(source) for part in self.parts], "or")

    def compared(self) -> Iterator[Compared]:
        return (found for part in self.parts for found in part.compared())


def nodes(condition: Condition) -> int:
    """How many tests the condition runs on an event at most: what it costs the publisher per event."""
    if isinstance(condition, (AllOf, AnyOf)):
        return 1 + sum(nodes(part) for part in condition.parts)
    return 1


def compile_condition(raw: Any, where: str = "when", *, generated: bool = True) -> Condition:
    """The evaluator of the JSON condition ``raw``; ``ConditionError`` names what is wrong and where.

    One of ``GENERATED_FROM`` tests or more runs as one generated function (``generated=False``: the
    closures alone, the reference it is tested against)."""
    count = [0]
    condition = _compile(raw, where, 1, count)
    if generated and count[0] >= GENERATED_FROM:
        object.__setattr__(condition, "test", generate(condition))
    return condition


def generate(condition: Condition) -> Test:
    """``condition``'s test as one generated function (``publisher.routing.generated``)."""
    source = Source()
    return source.function(condition._expression(source))


def _compile(raw: Any, where: str, depth: int, count: list[int]) -> Condition:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ConditionError(f"{where}: more than {MAX_NODES} conditions")
    if not isinstance(raw, dict):
        raise ConditionError(f"{where}: a condition is a JSON object, not {_kind(raw)}")
    used = [name for name in _OPERATORS if name in raw]
    unknown = sorted(set(raw) - {*_OPERATORS, "property", "row"})
    if unknown:
        raise ConditionError(f"{where}: unknown key {unknown[0]!r}; use one of {', '.join(_OPERATORS)}")
    if not used:
        raise ConditionError(f"{where}: no operator; use one of {', '.join(_OPERATORS)}")
    if used[0] in ("all_of", "any_of"):
        return _group(raw, used, where, depth, count)
    if used[0] == "changed":
        _alone(raw, used, where, {"changed"})
        return Changed(where, tuple(_names(raw["changed"], f"{where}.changed")))
    if used[0] in ("from", "to"):
        return _transition(raw, used, where)
    return _value(raw, used, where)


def _group(raw: dict[str, Any], used: list[str], where: str, depth: int, count: list[int]) -> Condition:
    name = used[0]
    _alone(raw, used, where, {name})
    if depth >= MAX_DEPTH:
        raise ConditionError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    parts = _list(raw[name], f"{where}.{name}")
    compiled = tuple(_compile(part, f"{where}.{name}[{i}]", depth + 1, count) for i, part in enumerate(parts))
    return AllOf(compiled) if name == "all_of" else AnyOf(compiled)


def _transition(raw: dict[str, Any], used: list[str], where: str) -> Condition:
    _alone(raw, used, where, {"from", "to", "property"})
    name = _property(raw, where)
    start = (_scalar(raw["from"], f"{where}.from"),) if "from" in raw else ()
    end = (_scalar(raw["to"], f"{where}.to"),) if "to" in raw else ()
    if start and end and same(start[0], end[0]):
        raise ConditionError(f"{where}: from and to are the same value, so {name!r} would not have changed; "
                             "use equals")
    return Transition(where, name, start, end)


def _value(raw: dict[str, Any], used: list[str], where: str) -> Condition:
    operator = used[0]
    _alone(raw, used, where, {operator, "property", "row"})
    name = _property(raw, where)
    row = raw.get("row", "new")
    if row not in ("new", "old"):
        raise ConditionError(f"{where}.row: use \"new\" or \"old\", not {row!r}"[:200])
    argument = raw[operator]
    if operator == "is_null":
        if not isinstance(argument, bool):
            raise ConditionError(f"{where}.is_null: true or false, not {_kind(argument)}")
        return Value(where, name, row == "old", operator, (), argument)
    values = _list(argument, f"{where}.in") if operator == "in" else [argument]
    checked = tuple(_scalar(value, f"{where}.{operator}") for value in values)
    return Value(where, name, row == "old", operator, checked)


def _alone(raw: dict[str, Any], used: list[str], where: str, allowed: set[str]) -> None:
    """One operator per object (from + to count as one), and only the keys that go with it."""
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConditionError(f"{where}: {extra[0]!r} does not go with {used[0]!r}; one operator per object "
                             "(combine with all_of / any_of)")


def _property(raw: dict[str, Any], where: str) -> str:
    if "property" not in raw:
        raise ConditionError(f"{where}: \"property\" is missing")
    return _names([raw["property"]], f"{where}.property")[0]


def _names(raw: Any, where: str) -> list[str]:
    names = _list(raw, where)
    for name in names:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ConditionError(f"{where}: a property name is a non-empty string of at most 200 characters")
    return names


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ConditionError(f"{where}: a non-empty list, not {_kind(raw)}")
    if not raw:
        raise ConditionError(f"{where}: an empty list; give at least one item")
    if len(raw) > MAX_LIST:
        raise ConditionError(f"{where}: more than {MAX_LIST} items")
    return raw


def _scalar(raw: Any, where: str) -> Scalar:
    if raw is None:
        raise ConditionError(f"{where}: null is not a value to compare with; use is_null")
    if not isinstance(raw, str | int | float | bool):
        raise ConditionError(f"{where}: compare with a string, number or boolean, not {_kind(raw)}")
    if isinstance(raw, str) and len(raw) > MAX_TEXT:
        raise ConditionError(f"{where}: a value longer than {MAX_TEXT} characters")
    return raw


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
