"""Routing: which integrations get an event. The one answer for live delivery, replay and samples.

An event reaches an integration of its organization when one of the integration's subscriptions
matches its entity key and operation, and the integration's environment (if it has one) is the
environment the capture stamped on the record, and the subscription's conditions (if any)
hold on the event (``publisher.routing.conditions``). The record's body is parsed once, here; what
conditions read of it (the rows' properties and ``updateMask``) is kept in ``EventFields.change``,
and every integration's compiled conditions are evaluated on that. The rows of a backfill for one
integration carry the ``walhook-backfill-integration`` header: they reach that integration only,
when it subscribes to their entity key with any operation (asking for the backfill was the opt-in
to ``read``; its filter, not the subscription's conditions, chooses the rows); the rows of a
backfill for all reach the integrations that subscribe to ``KEY:read``. Which integrations are
candidates is the caller's business: live delivery offers the enabled ones
(``publisher.routing.directory``), replay the one it replays for, a sample the one it is sent to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from models.headers import BACKFILL_INTEGRATION, ENVIRONMENT, ROUTING_HEADERS
from models.operational import OPERATIONAL_KEY, OPERATOR_ORGANIZATION
from publisher.errors import NotAnEvent
from publisher.routing.conditions import NO_CHANGE, Change
from publisher.routing.matching import covers_key, subscribed
from publisher.store.rows import Integration, NewDelivery


@dataclass(frozen=True, slots=True)
class EventFields:
    """What the publisher reads from an event to route it."""

    event_id: str
    organization_id: str | None
    entity_key: str
    operation: str
    entity_path: str
    environment: str | None = None  # the [source] environment stamped on the record, if any
    change: Change = NO_CHANGE  # what conditions read: rows' properties and updateMask (none: unreadable body)
    target_integration: int | None = None  # a backfill's rows for one integration only


def parse_event(value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> EventFields:
    """The routing fields of a walhook event; ``NotAnEvent`` says why ``value`` is not one.

    The body is checked (a record that is not a walhook event is dead-lettered, never sent);
    the environment comes from the ``walhook-environment`` header the capture stamps.
    """
    fields = _body_fields(value, headers)
    environment = target = None
    for name, raw in headers:
        if name == ENVIRONMENT:
            environment = raw.decode("utf-8", "replace")
        elif name == BACKFILL_INTEGRATION:
            target = _integration_id(raw)
    if environment is None and target is None:
        return fields
    return replace(fields, environment=environment, target_integration=target)


def _integration_id(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise NotAnEvent(f"header {BACKFILL_INTEGRATION} is not an integration id: {raw[:40]!r}") from exc


def _body_fields(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> EventFields:
    if not value:
        raise NotAnEvent("empty value")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        fields = _from_headers(headers) if _nested_too_deep(value) else None
        if fields is None:
            raise NotAnEvent(f"not JSON: {exc}") from exc
        return fields  # a column's JSON nested deeper than orjson reads (Postgres allows it)
    if not isinstance(event, dict):
        raise NotAnEvent(f"not a JSON object but {_json_type(event)}")
    return EventFields(
        event_id=_text(event, "eventId", empty=False), organization_id=_text(event, "organizationId", null=True),
        entity_key=_text(event, "entityKey"), operation=_text(event, "operationType", empty=False),
        entity_path=_text(event, "entityPath"), change=_change(event.get("data")))



ORJSON_DEPTH = 1024  # orjson refuses arrays and objects nested deeper; Postgres's json and jsonb allow them


def _nested_too_deep(value: bytes) -> bool:
    """Whether ``value``'s brackets nest deeper than orjson reads (strings skipped): such a body is an event
    of a column with deep JSON, routed by its headers, not a malformed record. Runs only when parsing failed."""
    depth, in_string, escaped = 0, False, False
    for byte in value:
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = byte == 0x5C, byte != 0x22
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > ORJSON_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False

def _change(data: Any) -> Change:
    """The rows and updateMask of ``data``; a part that is not of the event's shape counts as missing."""
    if not isinstance(data, dict):
        return NO_CHANGE
    mask = data.get("updateMask")
    return Change(_properties(data.get("value")), _properties(data.get("oldValue")),
                  mask if isinstance(mask, list) else None)


def _properties(state: Any) -> dict[str, Any] | None:
    properties = state.get("properties") if isinstance(state, dict) else None
    return properties if isinstance(properties, dict) else None


def _from_headers(headers: Sequence[tuple[str, bytes]]) -> EventFields | None:
    """The routing fields from the headers the CDC writes, when all of them are there."""
    found = {ROUTING_HEADERS[name]: value.decode("utf-8", "replace") for name, value in headers
             if name in ROUTING_HEADERS}
    if len(found) != len(ROUTING_HEADERS):
        return None
    return EventFields(event_id=found["event_id"], organization_id=found["organization_id"] or None,
                       entity_key=found["entity_key"], operation=found["operation"],
                       entity_path=found["entity_path"])


def _text(event: dict[str, Any], name: str, *, null: bool = False, empty: bool = True) -> Any:
    if name not in event:
        raise NotAnEvent(f"missing field {name}")
    value = event[name]
    if value is None and null:
        return None
    if not isinstance(value, str):
        raise NotAnEvent(f"field {name} is {_json_type(value)}, not a string")
    if not value and not empty:
        raise NotAnEvent(f"field {name} is empty")
    if "\0" in value:  # Postgres text cannot hold it: the store would refuse the delivery forever
        raise NotAnEvent(f"field {name} contains a NUL character")
    return value


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def receives(integration: Integration, event: EventFields) -> bool:
    """Whether ``integration`` subscribed to ``event`` and its conditions hold (enabled or not is the caller's)."""
    return _verdict(integration, event) is True


def _verdict(integration: Integration, event: EventFields) -> bool | None:
    """True: receives; False: subscribed to its key and operation, but no condition held; None: neither."""
    if not _hears(integration.organization_id, event) or integration.environment not in (None, event.environment):
        return None
    if event.target_integration is not None:
        return _targeted(integration, event) or None
    return subscribed(integration.subscriptions, event.entity_key, event.operation, event.change)


def _hears(organization_id: str, event: EventFields) -> bool:
    """An organization's integrations hear its own events; the operator's endpoint every operational one."""
    return organization_id == event.organization_id or (
        organization_id == OPERATOR_ORGANIZATION and event.entity_key == OPERATIONAL_KEY)


def _targeted(integration: Integration, event: EventFields) -> bool:
    """A backfill's row for one integration: that one, if it subscribes to the entity key at all."""
    return event.target_integration == integration.id and covers_key(integration.subscriptions, event.entity_key)


@dataclass(frozen=True, slots=True)
class Routed:
    """Who receives an event, and who subscribed to its entity key and operation but filtered it out."""

    recipients: list[Integration]
    filtered: list[Integration]


def route(candidates: Iterable[Integration], event: EventFields, can_hold: Sequence[bool] | None = None) -> Routed:
    """The candidates that receive ``event``, and those whose conditions filtered it out (no delivery).

    ``can_hold``, when given, says per candidate whether its conditions can hold for this event at all
    (``publisher.routing.candidates`` knows from the value they require): one that cannot, and that subscribed to
    the event's key and operation, is filtered out without evaluating them.
    """
    found: Routed = Routed([], [])
    organization, environment = event.organization_id, event.environment
    for position, integration in enumerate(candidates):  # the hot path: _verdict inlined, once per candidate
        if (integration.organization_id != organization and not _hears(integration.organization_id, event)) or \
                integration.environment not in (None, environment):
            continue
        if event.target_integration is not None:
            if _targeted(integration, event):
                found.recipients.append(integration)
            continue
        if can_hold is not None and not can_hold[position]:
            found.filtered.append(integration)
            continue
        verdict = subscribed(integration.subscriptions, event.entity_key, event.operation, event.change)
        if verdict is not None:
            (found.recipients if verdict else found.filtered).append(integration)
    return found


def recipients(candidates: Iterable[Integration], event: EventFields) -> list[Integration]:
    """The candidates that receive ``event``."""
    return route(candidates, event).recipients


def webhook_id(event_id: str, integration_id: int) -> str:
    """Stable per (event, integration): the same across retries, restarts, replays and re-reads."""
    return f"{event_id}_i{integration_id}"


def event_id_of(webhook_id_: str, integration_id: int) -> str:
    """The event a webhook-id names (``webhook_id`` read backwards)."""
    return webhook_id_.removesuffix(f"_i{integration_id}")


def delivery_of(integration: Integration, event: EventFields, body: bytes, partition: int | None,
                offset: int | None) -> NewDelivery:
    """The delivery of ``event`` (its record's exact bytes) to ``integration``."""
    return NewDelivery(integration.id, integration.organization_id, event.event_id,
                       webhook_id(event.event_id, integration.id), event.entity_key, event.entity_path,
                       event.operation, body, partition, offset)
