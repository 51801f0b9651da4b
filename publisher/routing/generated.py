"""A large condition as one generated Python function: the fast path beside the closures' reference.

The closures of ``publisher.routing.evaluation`` cost a Python call per test, and an organization may
route every event through thousands of tests (``[api] max_condition_cost_per_organization``): that
is CPU on the publisher's one event loop. For a condition of ``GENERATED_FROM`` tests or more, its
nodes write one boolean expression instead (``Condition._expression``); it is compiled once into a
function that reads the change's rows and mask once and runs the tests inline: about a third of the
closures' time per test.

Nothing a user wrote is ever part of the source: property names, values and value sets are
constants the source names (``c0``, ``c1``...), bound in the function's namespace. Both paths give
the same verdict on every change (``tests/test_generated_conditions.py`` checks them against each
other); the closures remain the reference, and the evaluator of small conditions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from publisher.routing.evaluation import MISSING

GENERATED_FROM = 4
"""Conditions of at least this many tests are generated; smaller ones gain too little to pay the compile."""


class Source:
    """The constants a condition's expression names; ``function`` compiles the expression once."""

    def __init__(self) -> None:
        self._constants: dict[str, Any] = {"MISSING": MISSING}

    def constant(self, value: Any) -> str:
        """A name for ``value`` in the generated code (the value itself never is source text)."""
        name = f"c{len(self._constants) - 1}"
        self._constants[name] = value
        return name

    def function(self, expression: str) -> Callable[[Any], bool]:
        """The test ``change -> bool`` of ``expression``, which reads ``new``, ``old`` and ``mask``."""
        source = (f"def test(change):\n    new = change.new\n    old = change.old\n    mask = change.mask\n"
                  f"    return {expression}\n")
        namespace = dict(self._constants)
        exec(compile(source, "<condition>", "exec"), namespace)  # the source holds no user text: see constant()
        test: Callable[[Any], bool] = namespace["test"]
        return test


def row_has(row: str, name: str, test: str) -> str:
    """The row (``new`` or ``old``) carries the property ``name`` (a constant's name) and ``x`` passes ``test``."""
    return f"({row} is not None and (x := {row}.get({name}, MISSING)) is not MISSING and {test})"


def mask_names(names: str) -> str:
    """``updateMask`` names any of the frozenset ``names`` (a constant's name); no mask is never a change."""
    return f"(mask is not None and not {names}.isdisjoint(mask))"


def joined(parts: list[str], operator: str) -> str:
    """``all_of`` (``and``) or ``any_of`` (``or``) of the parts' expressions."""
    return "(" + f" {operator} ".join(parts) + ")"
