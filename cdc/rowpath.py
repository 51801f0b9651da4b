"""The two row paths of capture: the reference (pure Python) and the compiled one (``cdc._rowpath``).

A row change becomes the bytes Kafka carries: the event's JSON, its key and its headers. The
reference path decodes the pgoutput message (``cdc.pgoutput``), builds the event as a dict
(``cdc.entities``) and serialises it with orjson (``cdc.kafka``). The compiled path, a Cython
extension built by ``pip install`` when the machine has a C compiler, writes the same bytes
straight from the message. Which one runs is chosen once, when the pipeline starts, from
``[source] row_path``: ``auto`` (compiled when built), ``compiled`` or ``python``.

The compiled path handles the common forms of every built-in type and hands anything else
(an unchanged TOAST value, a value it cannot read, a row that moved to another organization)
back to the reference path, row by row,
so both always give the same bytes (tests/test_rowpath.py checks it).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any, Literal

import orjson

from cdc import values
from cdc.entities import EventBuilder, TableMapping, TransactionContext
from cdc.errors import MappingError
from cdc.kafka import message_headers, message_key
from cdc.pgoutput import Delete, Insert, Update, decode

try:
    from cdc import _rowpath  # type: ignore[attr-defined]
except ImportError:  # no C compiler when installed: the reference path runs
    _rowpath = None

COMPILED_AVAILABLE: bool = _rowpath is not None
"""True when the compiled row path was built at install time."""

RowPath = Literal["auto", "compiled", "python"]
Encoded = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""(key, value, headers) of one event, as Kafka gets them."""


def use_compiled(row_path: RowPath) -> bool:
    """Resolve the ``[source] row_path`` setting; ``compiled`` without the extension is a configuration error."""
    if row_path == "compiled" and not COMPILED_AVAILABLE:
        raise MappingError("[source] row_path = \"compiled\", but the compiled row path was not built "
                           "(install walhook on a machine with a C compiler, or use \"auto\")")
    return row_path != "python" and COMPILED_AVAILABLE


def encode_reference(builder: EventBuilder, payload: bytes, tx: TransactionContext, index: int,
                     environment: str | None = None) -> list[Encoded]:
    """The reference path for one Insert/Update/Delete payload: no event when its table is not
    configured, two for a row that moved to another organization, else one."""
    change = decode(payload)
    assert isinstance(change, Insert | Update | Delete)
    built = builder.build(change, tx, index)
    events = [] if built is None else list(built) if isinstance(built, tuple) else [built]
    return [(message_key(event), orjson.dumps(event), message_headers(event, environment)) for event in events]


def _kind(converter: Callable[[bytes], Any]) -> int:
    """How the compiled path treats a column, from its reference converter."""
    assert _rowpath is not None
    element = getattr(converter, "element", None)
    kinds: list[tuple[Any, int]] = [
        (values.text_converter, _rowpath.K_TEXT), (int, _rowpath.K_INT), (values.bool_converter, _rowpath.K_BOOL),
        (orjson.Fragment, _rowpath.K_FRAGMENT), (values.timestamptz_converter, _rowpath.K_TIMESTAMPTZ),
        (values.timestamp_converter, _rowpath.K_TIMESTAMP), (values.float_converter, _rowpath.K_FLOAT),
    ]
    for known, kind in kinds:
        if converter is known:
            return kind
    if element is values.text_converter:
        return int(_rowpath.K_ARRAY_TEXT)
    if element is int:
        return int(_rowpath.K_ARRAY_INT)
    return int(_rowpath.K_OTHER)


def _template(template: str, names: list[str]) -> Any:
    """``'a/{x}/b'`` as the compiled path's literal parts and column positions."""
    assert _rowpath is not None
    literals: list[bytes] = []
    positions: list[int] = []
    pending = ""
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        pending += literal
        if field is not None:
            literals.append(pending.encode())
            positions.append(names.index(field))
            pending = ""
    literals.append(pending.encode())
    return _rowpath.Template(literals, positions)


def plan_for(mapping: TableMapping, environment: str | None = None) -> Any:
    """The compiled plan of one table mapping, or None when the reference path must take all its rows."""
    if _rowpath is None:
        return None
    names = [name for _, name in mapping.properties]
    if len(set(names)) != len(names):  # two columns, one property name: the reference keeps the dict's rule
        return None
    settings, columns = mapping.settings, mapping.column_names
    return _rowpath.RowPlan(
        [_kind(converter) for converter in mapping.converters], list(mapping.converters),
        [i for i, _ in mapping.properties], [orjson.dumps(name) + b":" for name in names],
        [orjson.dumps(name) for name in names],
        _template(settings.entity_path, columns),
        _template(mapping.entity_id_template, columns),
        _template(settings.collection_path, columns),
        _position(columns, settings.organization_column), _organization_in_key(mapping),
        _position(columns, settings.create_time_column), _position(columns, settings.update_time_column),
        settings.entity_key, environment, settings.organization)


def _organization_in_key(mapping: TableMapping) -> bool:
    """Whether a key-only old row holds the organization (then a move is visible without FULL identity)."""
    column = mapping.settings.organization_column
    return column is not None and mapping.relation.columns[mapping.column_names.index(column)].is_key


def _position(names: list[str], column: str | None) -> int:
    return -1 if column is None else names.index(column)


_UNPLANNED = object()


class RowEncoder:
    """Turns row-change payloads into Kafka's bytes with the compiled path, one plan per relation."""

    def __init__(self, builder: EventBuilder, environment: str | None = None) -> None:
        self._builder = builder
        self._environment = environment
        self._plans: dict[int, Any] = {}

    def forget(self, relation_oid: int) -> None:
        """Drop a relation's plan: its Relation message came again (schema change)."""
        self._plans.pop(relation_oid, None)

    def encode(self, payload: bytes, tx: TransactionContext, index: int) -> Encoded | None:
        """The event's (key, value, headers), or None: then the reference path takes this row."""
        oid = int.from_bytes(payload[1:5], "big")
        plan = self._plans.get(oid, _UNPLANNED)
        if plan is _UNPLANNED:
            mapping = self._builder.mapping(oid)
            plan = self._plans[oid] = None if mapping is None else plan_for(mapping, self._environment)
        if plan is None:
            return None
        encoded: Encoded | None = plan.encode(payload, tx, index)
        return encoded
