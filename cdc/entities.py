"""Turn decoded row changes into entity events, following the ``[[entities]]`` configuration.

``EventBuilder`` keeps one compiled ``TableMapping`` per relation: column positions,
converters and templates are resolved when the Relation message arrives (and again when
the schema changes), so building an event is a loop over the row, nothing more.

Rules worth knowing (also in docs/concepts/events.md):

* ``entityId`` defaults to the last column named in ``entity_path``.
* ``data.value.key`` is the entity path.
* ``updateMask`` lists the properties whose values differ; it needs the full old row
  (REPLICA IDENTITY FULL). Without it ``oldValue`` holds what Postgres sent (the key
  columns) or null, and ``updateMask`` is null - never a guessed mask.
* An unchanged TOASTed value is taken from the old row when Postgres sent it (FULL);
  otherwise the property is left out of ``properties`` rather than reported as null.
* An update that changes the organization column is two events: ``deleted`` to the old
  organization (its old row) and ``created`` to the new one (no old row), so that neither sees
  the other's data. The old organization is known only from an old row: REPLICA IDENTITY FULL,
  or a replica identity key that holds the organization column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson

from cdc.errors import MappingError
from cdc.lsn import format_lsn
from cdc.pgoutput import UNCHANGED_TOAST, Delete, Insert, Relation, TupleData, Update
from cdc.values import Converter, UserType, converter_for
from models.events import MOVED_SUFFIX, camel_case, event_id_prefix, iso_utc
from models.settings import EntitySettings, template_columns

Row = dict[str, Any]


class TransactionContext:
    """The transaction a change belongs to; its text forms are computed once, not per event."""

    __slots__ = ("commit_lsn", "commit_lsn_text", "commit_time_us", "encoded", "event_id_prefix", "event_timestamp",
                 "xid")

    def __init__(self, xid: int, commit_lsn: int, commit_time_us: int) -> None:
        self.xid = xid
        self.commit_lsn = commit_lsn
        self.commit_time_us = commit_time_us
        self.commit_lsn_text = format_lsn(commit_lsn)
        self.event_timestamp = iso_utc(commit_time_us)
        self.event_id_prefix = event_id_prefix(commit_lsn)
        self.encoded: object = None  # the compiled row path's JSON parts of the above (cdc.rowpath)

    def event_id(self, index: int) -> str:
        """``models.events.make_event_id``, with the transaction's part formatted once."""
        return f"{self.event_id_prefix}{index:06d}"


Render = Callable[[Sequence[Any]], str]


def compile_template(template: str, column_names: list[str]) -> Render:
    """A path template as a function of a decoded row: ``'a/{x}/b'`` -> ``lambda row: f"a/{row[i]}/b"``."""
    columns = template_columns(template)
    positions = [column_names.index(name) for name in columns]
    # Positional placeholders keep str.format from interpreting column names.
    pattern = re.sub(r"\{[^{}]*\}", "{}", template.replace("{{", "\0").replace("}}", "\1"))
    pattern = pattern.replace("\0", "{{").replace("\1", "}}")
    if not positions:
        constant = pattern.format()
        return lambda row: constant
    if len(positions) == 1:
        (position,) = positions
        if pattern == "{}":
            return lambda row: f"{row[position]}"
        return lambda row: pattern.format(row[position])
    pick = itemgetter(*positions)
    return lambda row: pattern.format(*pick(row))


class TableMapping:
    """How rows of one relation become events; built once per Relation message."""

    def __init__(self, settings: EntitySettings, relation: Relation,
                 user_types: Mapping[int, UserType] | None = None) -> None:
        self.settings = settings
        self.relation = relation
        names = [column.name for column in relation.columns]
        missing = sorted(settings.columns_used() - set(names))
        if missing:
            raise MappingError(f"[[entities]] table {settings.table}: column(s) {', '.join(missing)} "
                               f"named in the mapping do not exist (table has: {', '.join(names)})")
        self.column_names = names
        self.converters: list[Converter] = [converter_for(column.type_oid, user_types)
                                            for column in relation.columns]
        for name in settings.columns_used():  # paths and routing need a value, not embedded JSON text
            if self.converters[names.index(name)] is orjson.Fragment:
                self.converters[names.index(name)] = orjson.loads
        excluded = set(settings.exclude_columns)
        style = camel_case if settings.property_names == "camel_case" else str
        self.properties = [(i, style(name)) for i, name in enumerate(names) if name not in excluded]
        # Without excluded columns a row's properties are simply its values, in order.
        self._all_columns = len(self.properties) == len(names)
        self._property_names = [name for _, name in self.properties]
        self.entity_path = compile_template(settings.entity_path, names)
        self.collection_path = compile_template(settings.collection_path, names)
        self.entity_id_template = settings.entity_id or _last_field(settings.entity_path)
        self.entity_id = compile_template(self.entity_id_template, names)
        self.entity_key = settings.entity_key
        self._organization = _position(names, settings.organization_column)
        # A key-only old row (no FULL identity) still tells the old organization if the key holds it.
        self._organization_in_key = self._organization is not None and relation.columns[self._organization].is_key
        self._create_time = _position(names, settings.create_time_column)
        self._update_time = _position(names, settings.update_time_column)
        self.full_identity = relation.replica_identity == "f"

    def decode_row(self, values: TupleData, fallback: TupleData | None = None) -> list[Any]:
        """Convert one tuple; unchanged TOAST values come from ``fallback`` when it has them."""
        if UNCHANGED_TOAST not in values:
            try:
                return [None if raw is None else convert(raw)  # type: ignore[arg-type]
                        for convert, raw in zip(self.converters, values, strict=True)]
            except (ValueError, TypeError, UnicodeDecodeError):
                pass  # the careful loop below names the column
        return self._decode_each(values, fallback)

    def _decode_each(self, values: TupleData, fallback: TupleData | None) -> list[Any]:
        row: list[Any] = []
        for i, raw in enumerate(values):
            if raw is UNCHANGED_TOAST and fallback is not None and fallback[i] is not UNCHANGED_TOAST:
                raw = fallback[i]
            if raw is None or raw is UNCHANGED_TOAST:
                row.append(raw)
                continue
            try:
                row.append(self.converters[i](raw))  # type: ignore[arg-type]
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                column = self.relation.columns[i]
                raise MappingError(f"{self.relation.qualified_name}.{column.name} (type oid {column.type_oid}): "
                                   f"cannot convert {str(raw)[:80]}: {exc}") from exc
        return row

    def state(self, row: list[Any], key_only: bool = False, path: str | None = None) -> Row:
        """The ``value`` / ``oldValue`` object for one decoded row (``path``: its entity path, if known)."""
        if key_only or UNCHANGED_TOAST in row:
            properties = {name: row[i] for i, name in self.properties
                          if row[i] is not UNCHANGED_TOAST and not (key_only and row[i] is None)}
        elif self._all_columns:
            properties = dict(zip(self._property_names, row, strict=True))
        else:
            properties = {name: row[i] for i, name in self.properties}
        return {
            "key": self.entity_path(row) if path is None else path,
            "properties": properties,
            "createTime": _known(row, self._create_time),
            "updateTime": _known(row, self._update_time),
        }

    def update_mask(self, old: TupleData, new: TupleData) -> list[str]:
        """Properties whose text differs between the old and new tuple (exact, type-agnostic)."""
        return [name for i, name in self.properties if new[i] is not UNCHANGED_TOAST and new[i] != old[i]]

    def moved(self, old: list[Any], new: list[Any], full_old: bool) -> bool:
        """True when an update changed the row's organization (as far as the old row tells)."""
        position = self._organization
        if position is None or not (full_old or self._organization_in_key) or new[position] is UNCHANGED_TOAST:
            return False
        return bool(old[position] != new[position])

    def organization(self, row: list[Any]) -> str | None:
        """The row's organization: its organization column's value, or the entity's fixed organization."""
        value = _known(row, self._organization)
        return self.settings.organization if value is None else str(value)


def _position(names: list[str], column: str | None) -> int | None:
    return None if column is None else names.index(column)


def _known(row: list[Any], position: int | None) -> Any:
    """The value at ``position``; None for no column or a TOASTed value Postgres did not send."""
    if position is None:
        return None
    value = row[position]
    return None if value is UNCHANGED_TOAST else value


def _last_field(template: str) -> str:
    fields = template_columns(template)
    if not fields:
        raise MappingError(f"entity_path {template!r} names no column; set entity_id explicitly")
    return "{" + fields[-1] + "}"


class EventBuilder:
    """Builds event dicts for the configured tables; ignores every other relation."""

    def __init__(self, entities: Iterable[EntitySettings]) -> None:
        self._settings = {entity.table: entity for entity in entities}
        self._mappings: dict[int, TableMapping | None] = {}
        self.user_types: dict[int, UserType] = {}

    def wants(self, relation: Relation) -> bool:
        return relation.qualified_name in self._settings

    def on_relation(self, relation: Relation) -> None:
        """Compile (or recompile, after a schema change) the mapping of ``relation``.

        User-defined column types must be in ``user_types`` first (see ``cdc.catalog``).
        """
        settings = self._settings.get(relation.qualified_name)
        self._mappings[relation.oid] = TableMapping(settings, relation, self.user_types) if settings else None

    def mapping(self, relation_oid: int) -> TableMapping | None:
        return self._mappings.get(relation_oid)

    def relations(self) -> list[Relation]:
        """The relations of configured tables seen so far in this session."""
        return [mapping.relation for mapping in self._mappings.values() if mapping is not None]

    def build(self, change: Insert | Update | Delete, tx: TransactionContext,
              index: int) -> Row | tuple[Row, Row] | None:
        """The event for one row change, or ``None`` when its table is not configured.

        A row that moved to another organization gives two events, (``deleted``, ``created``).
        """
        mapping = self._mappings.get(change.relation_oid)
        if mapping is None:
            return None
        if isinstance(change, Insert):
            new = mapping.decode_row(change.new)
            path = mapping.entity_path(new)
            return self._event("created", mapping, new, path, mapping.state(new, path=path), None, None, tx, index)
        if isinstance(change, Update):
            return self._update(mapping, change, tx, index)
        old = mapping.decode_row(change.old)
        path = mapping.entity_path(old)
        return self._event("deleted", mapping, old, path, None, mapping.state(old, change.old_is_key_only, path),
                           None, tx, index)

    def _update(self, mapping: TableMapping, change: Update, tx: TransactionContext,
                index: int) -> Row | tuple[Row, Row]:
        full_old = change.old is not None and not change.old_is_key_only
        new = mapping.decode_row(change.new, change.old if full_old else None)
        old_state = mask = None
        if change.old is not None:
            old = mapping.decode_row(change.old)
            if mapping.moved(old, new, full_old):
                return self._move(mapping, change, old, new, tx, index)
            old_state = mapping.state(old, change.old_is_key_only)
        if full_old:
            mask = mapping.update_mask(change.old, change.new)  # type: ignore[arg-type]
        path = mapping.entity_path(new)
        return self._event("updated", mapping, new, path, mapping.state(new, path=path), old_state, mask, tx, index)

    def _move(self, mapping: TableMapping, change: Update, old: list[Any], new: list[Any], tx: TransactionContext,
              index: int) -> tuple[Row, Row]:
        """The row left one organization and joined another: each is told only of its own side."""
        old_path, path = mapping.entity_path(old), mapping.entity_path(new)
        old_state = mapping.state(old, change.old_is_key_only, old_path)
        left = self._event("deleted", mapping, old, old_path, None, old_state, None, tx, index)
        joined = self._event("created", mapping, new, path, mapping.state(new, path=path), None, None, tx, index)
        joined["eventId"] += MOVED_SUFFIX
        return left, joined

    def unbuildable(self, change: Insert | Update | Delete, tx: TransactionContext, index: int) -> Row:
        """What can be said of a change whose row could not be converted: enough to find it again."""
        mapping = self._mappings.get(change.relation_oid)
        operation = {Insert: "created", Update: "updated", Delete: "deleted"}[type(change)]
        return {
            "eventTimestamp": tx.event_timestamp, "operationType": operation,
            "entityPath": "", "entityId": "", "organizationId": None,
            "entityKey": mapping.entity_key if mapping else "",
            "table": mapping.relation.qualified_name if mapping else str(change.relation_oid),
            "eventId": tx.event_id(index),
            "transaction": {"id": tx.xid, "commitLsn": tx.commit_lsn_text, "index": index},
        }

    def truncate_event(self, mapping: TableMapping, tx: TransactionContext, index: int) -> Row:
        """One event per truncated table: no entity, no organization (it affects every row)."""
        return {
            "eventTimestamp": tx.event_timestamp,
            "operationType": "truncated",
            "entityPath": "",
            "entityId": "",
            "entityKey": mapping.settings.entity_key,
            "collectionPath": mapping.settings.collection_path,
            "organizationId": None,
            "data": {"value": None, "oldValue": None, "updateMask": None},
            "eventId": tx.event_id(index),
            "transaction": {"id": tx.xid, "commitLsn": tx.commit_lsn_text, "index": index},
        }

    @staticmethod
    def _event(operation: str, mapping: TableMapping, row: list[Any], path: str, value: Row | None,
               old_value: Row | None, mask: list[str] | None, tx: TransactionContext, index: int) -> Row:
        return {
            "eventTimestamp": tx.event_timestamp,
            "operationType": operation,
            "entityPath": path,
            "entityId": mapping.entity_id(row),
            "entityKey": mapping.entity_key,
            "collectionPath": mapping.collection_path(row),
            "organizationId": mapping.organization(row),
            "data": {"value": value, "oldValue": old_value, "updateMask": mask},
            "eventId": tx.event_id(index),
            "transaction": {"id": tx.xid, "commitLsn": tx.commit_lsn_text, "index": index},
        }


_NO_TRANSACTION = TransactionContext(0, 0, 0)


def read_event(mapping: TableMapping, row: list[Any]) -> Row:
    """A backfill's ``read`` event for one decoded row: the row as ``value``, no old row, no mask.

    Its id, timestamp and ``transaction`` are placeholders until the chunk's high mark stamps them
    (``stamp_read``): they name the position the event is emitted at.
    """
    path = mapping.entity_path(row)
    return EventBuilder._event("read", mapping, row, path, mapping.state(row, path=path), None, None,
                               _NO_TRANSACTION, 0)


def stamp_read(event: Row, mark: TransactionContext, event_id: str, index: int) -> None:
    """Give a read event its place: the high mark's commit (time and LSN) and its index there."""
    event["eventTimestamp"] = mark.event_timestamp
    event["eventId"] = event_id
    event["transaction"] = {"id": mark.xid, "commitLsn": mark.commit_lsn_text, "index": index}
