"""Example change events: what a webhook receiver gets, made up from the ``[[entities]]`` configuration.

A settings page uses these to show what each subscribable event looks like and to send a
sample payload to a webhook URL. An example has exactly the shape of a real event (it is
validated against :class:`models.events.ChangeEvent`) and follows the same mapping rules as
``cdc.entities``: property names styled by ``property_names``, excluded columns left out of
``properties``, ``data.value.key`` = the entity path, ``entityId`` defaulting to the last
column of ``entity_path``.

Only the columns the configuration names are known, so the example row holds just those:

* template columns: ``123``, ``124``, ... for id-like names (``id``, ``*_id``, ``*Id``),
  ``"example"`` otherwise;
* the organization column: the organization id the example is made for;
* the create/update time columns: ISO 8601 UTC timestamps around ``now_us``.

An example is recognisable as one: its ``eventId`` is ``evt_sample_<operation>`` and its
transaction is ``{"id": 0, "commitLsn": "0/0", "index": 0}``; real events never have these.
"""

from __future__ import annotations

import itertools
import string
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from models import operational
from models.events import ChangeEvent, camel_case, iso_utc
from models.operational import KINDS, OPERATIONAL_KEY
from models.settings import EntitySettings, template_columns

SAMPLE_OPERATIONS: tuple[str, ...] = ("created", "updated", "deleted")
"""The three changes, in the order a dropdown lists them: what a subscription's ``*`` means."""

EVENT_OPERATIONS: tuple[str, ...] = (*SAMPLE_OPERATIONS, "read")
"""Every operation an integration can subscribe to and get an example of: the changes, and
``read`` - an existing row a backfill read (subscribed to by name only)."""

FIRST_EXAMPLE_ID = 123
EXAMPLE_TEXT = "example"
_AN_HOUR_US = 3_600 * 1_000_000

Row = dict[str, Any]


def check_operation(operation: str) -> None:
    """Raise ``ValueError`` unless ``operation`` is one of ``created``, ``updated``, ``deleted``, ``read``."""
    if operation not in EVENT_OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; use one of {', '.join(EVENT_OPERATIONS)}")


def sample_event_id(operation: str) -> str:
    """The ``eventId`` of an example event: ``evt_sample_<operation>`` (no ``.``, so usable in a webhook-id)."""
    return f"evt_sample_{operation}"


def example_event(entity: EntitySettings, operation: str, organization_id: str = "org_example",
                  now_us: int | None = None) -> dict[str, Any]:
    """A plausible ``operation`` event of ``entity``, as the JSON-ready dict a webhook body holds.

    ``now_us`` (microseconds since the Unix epoch, default: now) is the event time; an updated,
    deleted or (by a backfill) read row was last written an hour before it. Raises ``ValueError`` for an unknown
    operation, or when ``entity_path`` names no column and ``entity_id`` is not set (such a
    mapping cannot produce events at all).
    """
    check_operation(operation)
    now_us = time.time_ns() // 1_000 if now_us is None else now_us
    if operation == "created":
        row = example_row(entity, organization_id, written_us=now_us)
        return _event(entity, operation, organization_id, now_us, row, _state(entity, row), None, None)
    before = example_row(entity, organization_id, written_us=now_us - _AN_HOUR_US)
    if operation == "read":
        return _event(entity, operation, organization_id, now_us, before, _state(entity, before), None, None)
    if operation == "deleted":
        return _event(entity, operation, organization_id, now_us, before, None, _state(entity, before), None)
    after, mask = _updated(entity, before, now_us)
    return _event(entity, operation, organization_id, now_us, after, _state(entity, after), _state(entity, before),
                  mask)


def as_if(event: dict[str, Any], new: Row | None = None, old: Row | None = None) -> dict[str, Any]:
    """``event`` (an example) with properties of its new row (``value``) and old row (``oldValue``) set.

    "As if status changed to approved": ``as_if(update, new={"status": "approved"}, old={"status": "review"})``.
    Properties go only onto the rows the operation has (a created event has no old row). On an
    update, ``updateMask`` lists a given property exactly when its value now differs between
    the rows (a property one row lacks counts as changed), as the capture would list it.
    Raises ``ValueError`` for a property name that is not a string.
    """
    data = event["data"]
    for name in [*(new or {}), *(old or {})]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a property name must be a non-empty string, not {name!r}")
    value = _with(data["value"], new)
    old_value = _with(data["oldValue"], old)
    mask = data["updateMask"]
    if event["operationType"] == "updated" and value is not None and old_value is not None:
        given = {*(new or {}), *(old or {})}
        before, after = old_value["properties"], value["properties"]
        differs = {name for name in given if before.get(name, _ABSENT) != after.get(name, _ABSENT)}
        mask = sorted((set(mask or []) - given) | differs)
    return {**event, "data": {"value": value, "oldValue": old_value, "updateMask": mask}}


_ABSENT = object()


def _with(state: Row | None, properties: Row | None) -> Row | None:
    if state is None or not properties:
        return state
    return {**state, "properties": {**state["properties"], **properties}}


def catalogue(entities: list[EntitySettings], organization_id: str = "org_example",
              now_us: int | None = None) -> list[dict[str, Any]]:
    """Every subscribable event, for a "subscribed events" dropdown: one entry per configured entity.

    Each entry is ``{"entityKey": ..., "operations": ["created", "updated", "deleted", "read"],
    "examples": {operation: example_event(...)}}``; all examples share one ``now_us``.
    ``reachesNoOrganization`` marks an entity whose events belong to no organization (no
    ``organization_column``, no ``organization``): no integration receives them. An entity whose rows
    all belong to another organization is left out.
    """
    now_us = time.time_ns() // 1_000 if now_us is None else now_us
    return [*({"entityKey": entity.entity_key, "operations": list(EVENT_OPERATIONS),
               "reachesNoOrganization": not entity.reaches_an_organization(),
               "examples": {op: example_event(entity, op, organization_id, now_us) for op in EVENT_OPERATIONS}}
              for entity in listed_for(entities, organization_id)), operational_entry(organization_id, now_us)]


def operational_entry(organization_id: str, now_us: int) -> dict[str, Any]:
    """The operational events' catalogue entry: walhook's own events about deliveries, jobs and secrets,
    subscribed to by naming ``walhook/operational`` (``*`` of any other key never covers them)."""
    now = datetime.fromtimestamp(now_us / 1_000_000, UTC)
    return {"entityKey": OPERATIONAL_KEY, "operations": list(KINDS), "reachesNoOrganization": False,
            "operational": True, "examples": {kind: operational.example(kind, organization_id, now) for kind in KINDS}}


def listed_for(entities: list[EntitySettings], organization_id: str | None) -> list[EntitySettings]:
    """The entities an organization's catalogue shows: all but those whose rows all belong to another one."""
    return [entity for entity in entities
            if entity.organization is None or organization_id is None or entity.organization == organization_id]


def named_columns(entity: EntitySettings) -> list[str]:
    """The columns the mapping names, in a stable order: templates first, then organization and times."""
    names = [*template_columns(entity.entity_path), *template_columns(entity.collection_path),
             *template_columns(entity.entity_id or ""), entity.organization_column, entity.create_time_column,
             entity.update_time_column]
    return list(dict.fromkeys(name for name in names if name))


def example_row(entity: EntitySettings, organization_id: str, written_us: int) -> Row:
    """Example values for every named column (see the module docstring), rows written at ``written_us``."""
    ids = itertools.count(FIRST_EXAMPLE_ID)
    special = {entity.organization_column: organization_id, entity.create_time_column: iso_utc(written_us),
               entity.update_time_column: iso_utc(written_us)}
    return {name: special[name] if name in special else _placeholder(name, ids) for name in named_columns(entity)}


def _placeholder(name: str, ids: Iterator[int]) -> int | str:
    return next(ids) if _id_like(name) else EXAMPLE_TEXT


def _id_like(name: str) -> bool:
    return name.lower() == "id" or name.lower().endswith("_id") or name.endswith("Id")


def _updated(entity: EntitySettings, before: Row, now_us: int) -> tuple[Row, list[str]]:
    """The row after an example update, and its ``updateMask`` (empty when no property can plausibly change)."""
    column = _changed_column(entity)
    if column is None:
        return dict(before), []
    after = {**before, column: iso_utc(now_us) if column == entity.update_time_column else _edited(before[column])}
    return after, [_style(entity)(column)]


def _changed_column(entity: EntitySettings) -> str | None:
    """What an example update changes: the update time, else the first property outside the entity's key."""
    fixed = {*template_columns(entity.entity_path), entity.organization_column, entity.create_time_column,
             *entity.exclude_columns}
    if entity.update_time_column and entity.update_time_column not in entity.exclude_columns:
        return entity.update_time_column
    return next((name for name in named_columns(entity) if name not in fixed), None)


def _edited(value: Any) -> Any:
    return value + 1 if isinstance(value, int) else f"{value}_edited"


def _style(entity: EntitySettings) -> Callable[[str], str]:
    return camel_case if entity.property_names == "camel_case" else str


def _state(entity: EntitySettings, row: Row) -> Row:
    """The ``value`` / ``oldValue`` object of one example row, built as ``cdc.entities`` builds it."""
    style = _style(entity)
    return {
        "key": render(entity.entity_path, row),
        "properties": {style(name): value for name, value in row.items() if name not in entity.exclude_columns},
        "createTime": row[entity.create_time_column] if entity.create_time_column else None,
        "updateTime": row[entity.update_time_column] if entity.update_time_column else None,
    }


def _event(entity: EntitySettings, operation: str, organization_id: str, now_us: int, row: Row,
           value: Row | None, old_value: Row | None, mask: list[str] | None) -> dict[str, Any]:
    event = {
        "eventTimestamp": iso_utc(now_us),
        "operationType": operation,
        "entityPath": render(entity.entity_path, row),
        "entityId": render(_entity_id_template(entity), row),
        "entityKey": entity.entity_key,
        "collectionPath": render(entity.collection_path, row),
        "organizationId": organization_id,
        "data": {"value": value, "oldValue": old_value, "updateMask": mask},
        "eventId": sample_event_id(operation),
        "transaction": {"id": 0, "commitLsn": "0/0", "index": 0},
    }
    ChangeEvent.model_validate(event)  # the shape receivers get; a mismatch is a bug here, not a user error
    return event


def _entity_id_template(entity: EntitySettings) -> str:
    if entity.entity_id is not None:
        return entity.entity_id
    columns = template_columns(entity.entity_path)
    if not columns:
        raise ValueError(f"entity_path {entity.entity_path!r} names no column; set entity_id explicitly")
    return "{" + columns[-1] + "}"


def render(template: str, row: Row) -> str:
    """Fill a path template from ``row`` as ``cdc.entities`` does: ``str(value)`` per column, specs ignored."""
    return "".join(literal + ("" if name is None else str(row[name]))
                   for literal, name, _, _ in string.Formatter().parse(template))
