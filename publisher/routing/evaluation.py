"""The condition tests as closures, built once per condition and run on every event (pure).

``publisher.routing.conditions`` defines the form and the rules; this module is how they run fast: each
test reads the change's row with a C-level getter, looks the property up once and compares by
type with frozensets, and the combinators loop over prebuilt tests. The tests read any object
with ``new``, ``old`` (property mappings or None) and ``mask`` (a list of names or None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

Test = Callable[[Any], bool]
ValueTest = Callable[[Any], bool]

MISSING = object()  # a property the row does not carry
_NEW, _OLD = attrgetter("new"), attrgetter("old")


def matcher(values: Iterable[Any]) -> ValueTest:
    """Whether a JSON value is one of ``values``, type-strict (``1`` is not ``true``; ``1`` is ``1.0``)."""
    values = tuple(values)
    strings = frozenset(v for v in values if type(v) is str)
    numbers = frozenset(v for v in values if type(v) in (int, float))
    booleans = frozenset(v for v in values if type(v) is bool)

    def test(value: Any) -> bool:
        kind = value.__class__
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        return kind is bool and value in booleans
    return test


def one_of(name: str, old_row: bool, values: Iterable[Any], negate: bool) -> Test:
    """equals / in (or not_equals, ``negate``): false when the row or the property is missing."""
    values = tuple(values)
    row_of, wanted = _OLD if old_row else _NEW, matcher(values)
    if len(values) == 1 and type(values[0]) is str:
        return _equals_text(name, row_of, values[0], negate)

    def test(change: Any) -> bool:
        row = row_of(change)
        if row is None:
            return False
        value = row.get(name, MISSING)
        return value is not MISSING and wanted(value) is not negate
    return test


def _equals_text(name: str, row_of: Callable[[Any], Any], text: str, negate: bool) -> Test:
    """The most common condition, one comparison: a string only equals an equal string."""
    def test(change: Any) -> bool:
        row = row_of(change)
        if row is None:
            return False
        value = row.get(name, MISSING)
        return value is not MISSING and (value == text) is not negate
    return test


def is_null(name: str, old_row: bool, null: bool) -> Test:
    row_of = _OLD if old_row else _NEW

    def test(change: Any) -> bool:
        row = row_of(change)
        if row is None:
            return False
        value = row.get(name, MISSING)
        return value is not MISSING and (value is None) is null
    return test


def changed(names: Iterable[str]) -> Test:
    """updateMask names any of ``names``; no mask (null) is never a change."""
    wanted = frozenset(names)

    def test(change: Any) -> bool:
        mask = change.mask
        return mask is not None and not wanted.isdisjoint(mask)
    return test


def transition(name: str, start: tuple[Any, ...], end: tuple[Any, ...]) -> Test:
    """The old row has ``start`` and the new row ``end``; one end alone also needs ``name`` in updateMask."""
    parts = [_has(_OLD, name, matcher(start))] if start else []
    parts += [_has(_NEW, name, matcher(end))] if end else []
    if not (start and end):  # both ends given (and different) already say it changed
        parts.append(changed([name]))
    return all_of(tuple(parts))


def _has(row_of: Callable[[Any], Any], name: str, wanted: ValueTest) -> Test:
    def test(change: Any) -> bool:
        row = row_of(change)
        if row is None:
            return False
        value = row.get(name, MISSING)
        return value is not MISSING and wanted(value)
    return test


def all_of(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 1:
        return tests[0]

    def test(change: Any) -> bool:
        for part in tests:  # noqa: SIM110 - a plain loop: all() over a generator costs more per event
            if not part(change):
                return False
        return True
    return test


def any_of(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 1:
        return tests[0]

    def test(change: Any) -> bool:
        for part in tests:  # noqa: SIM110 - as in all_of
            if part(change):
                return True
        return False
    return test
