"""The integration form: HTML form fields in, the API's own request model out, errors by field.

The form is validated by the same pydantic models as ``POST /v1/integrations`` and
``PATCH /v1/integrations/{id}``, so a bad value gets the API's words, shown next to its field.
Event checkboxes carry ``ENTITY_KEY:OPERATION``; ticking all three change operations of an entity
key subscribes to ``ENTITY_KEY:*``, and the ``read`` box (a backfill's rows) adds ``read``.
Subscriptions the checkboxes cannot show (wildcards such as ``flows/*:*``, and subscriptions
with conditions as their JSON object) live in the "other subscriptions" field, one per line, so
saving the form keeps them as they were.
The "only when" rows of an entity (``control.portal.condition_rows``) are the condition of its
ticked subscription; a stored condition is shown as rows only when they save it back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.datastructures import FormData

from control.api.schemas import IntegrationIn
from control.errors import RowsError
from control.portal.condition_rows import EntityRows, Kinds, condition_rows, read_rows, rows_condition
from models.errors import SecretError
from models.operational import OPERATIONAL_KEY
from models.samples import SAMPLE_OPERATIONS
from publisher.routing.matching import SubscriptionItem, parse_subscription
from publisher.sending.headers import hiding_custom_values
from publisher.sending.signing import secret_key
from publisher.store import Integration

Errors = dict[str, str]
READ = "read"  # a backfill's rows: a box of its own, since ``*`` (the "all" box) means the three changes only
TICK_OPERATIONS = (*SAMPLE_OPERATIONS, READ)
OPERATIONAL_TICK = f"{OPERATIONAL_KEY}:*"  # the box for every operational event (models.operational)


@dataclass
class IntegrationForm:
    """What the form shows: the values as typed, the ticked events, and an error per field."""

    values: dict[str, str] = field(default_factory=dict)
    ticked: set[str] = field(default_factory=set)
    errors: Errors = field(default_factory=dict)
    conditions: dict[str, EntityRows] = field(default_factory=dict)  # entity key -> its "only when" rows
    origins: dict[int, tuple[str, list[int]]] = field(default_factory=dict)  # events index -> key, rows saved
    error_rows: dict[str, int] = field(default_factory=dict)  # entity key -> the row its error is about


def events_from_ticks(ticked: Iterable[str], other: str) -> list[SubscriptionItem]:
    """Ticked ``key:op`` boxes grouped per entity key (all three changes: ``key:*``; with read: ``key:*,read``),
    then the other subscriptions."""
    grouped: dict[str, set[str]] = {}
    for tick in ticked:
        key, _, operation = tick.rpartition(":")
        if key and operation in TICK_OPERATIONS:
            grouped.setdefault(key, set()).add(operation)
    events: list[SubscriptionItem] = [_subscription_of(key, operations) for key, operations in grouped.items()]
    if OPERATIONAL_TICK in ticked:  # one box for every operational event
        events.append(OPERATIONAL_TICK)
    return [*events, *(_other(line.strip()) for line in other.splitlines() if line.strip())]


def _subscription_of(key: str, operations: set[str]) -> str:
    changes = [op for op in SAMPLE_OPERATIONS if op in operations]
    names = ["*"] if len(changes) == len(SAMPLE_OPERATIONS) else changes
    return f"{key}:{','.join([*names, *([READ] if READ in operations else [])])}"


def _other(line: str) -> SubscriptionItem:
    """A line of the other subscriptions: ``KEY:OPS``, or a subscription with conditions as its JSON object."""
    if line.startswith("{"):
        try:
            return orjson.loads(line)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:
            pass  # kept as text: validation names it
    return line


def ticks_from_events(events: list[SubscriptionItem], entity_keys: list[str]) -> tuple[set[str], list[str]]:
    """The boxes an integration's subscriptions tick, and the subscriptions that are not boxes."""
    ticked: set[str] = set()
    other: list[str] = []
    for text in events:
        if not isinstance(text, str):  # with conditions: shown and saved back as its JSON
            other.append(orjson.dumps(text).decode())
            continue
        subscription = parse_subscription(text)
        key = text.partition(":")[0].strip()
        if key == OPERATIONAL_KEY and subscription.operations == parse_subscription(OPERATIONAL_TICK).operations:
            ticked.add(OPERATIONAL_TICK)
        elif key in entity_keys:
            ticked.update(f"{key}:{op}" for op in subscription.operations)
        else:
            other.append(text)
    return ticked, other


def form_of(integration: Integration, entity_keys: list[str], kinds: Mapping[str, Kinds] | None = None,
            header_values: bool = True) -> IntegrationForm:
    """The form filled in from a saved integration (its secret is never put in the form; its custom
    headers' values only with ``header_values``, for a session that may manage it)."""
    headers = integration.headers if header_values else hiding_custom_values(integration.headers)
    events, conditions = shown_conditions([s.describe() for s in integration.subscriptions], entity_keys, kinds or {})
    ticked, other = ticks_from_events(events, entity_keys)
    values = {"name": integration.name, "url": integration.url, "environment": integration.environment or "",
              "batch_size": str(integration.batch_size), "ordering": integration.ordering,
              "rate_limit": "" if integration.rate_limit is None else f"{integration.rate_limit:g}",
              "headers": "\n".join(f"{k}: {v}" for k, v in headers.items()), "other": "\n".join(other),
              "concurrency": "" if integration.concurrency is None else str(integration.concurrency),
              "send_traceparent": "on" if integration.send_traceparent else ""}
    return IntegrationForm(values, ticked, conditions=conditions)


def _headers(text: str, errors: Errors) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            name, colon, value = line.partition(":")
            if not colon:
                errors["headers"] = f"write each header as 'Name: value', not {line.strip()!r}"
            headers[name.strip()] = value.strip()
    return headers


def _body(values: dict[str, str], form: IntegrationForm, kinds: Mapping[str, Kinds]) -> dict[str, Any]:
    errors = form.errors
    events = with_conditions(events_from_ticks(sorted(form.ticked), ""), form, kinds)
    body: dict[str, Any] = {"url": values.get("url", "").strip(),
                            "events": [*events, *events_from_ticks((), values.get("other", ""))],
                            "name": values.get("name", "").strip() or None,
                            "environment": values.get("environment", "").strip() or None,
                            "ordering": values.get("ordering") or "entity",
                            "batch_size": values.get("batch_size", "").strip() or "1",
                            "rate_limit": values.get("rate_limit", "").strip() or None,
                            "headers": _headers(values.get("headers", ""), errors) or None,
                            "concurrency": values.get("concurrency", "").strip() or None,
                            "send_traceparent": values.get("send_traceparent") == "on"}
    return body


def read_form(data: FormData, kinds: Mapping[str, Kinds] | None = None) -> tuple[IntegrationForm, IntegrationIn | None]:
    """The typed form, and the API request it makes (None when a field is wrong; see ``form.errors``).

    ``kinds`` (entity key -> property -> kind) types the values of the "only when" rows."""
    values = {name: str(data.get(name, "")) for name in
              ("name", "url", "environment", "batch_size", "ordering", "rate_limit", "headers", "other", "secret",
               "concurrency", "send_traceparent")}
    form = IntegrationForm(values, {str(v) for v in data.getlist("events")},
                           conditions=read_rows({name: str(value) for name, value in data.items()}))
    body = _body(values, form, kinds or {})
    secret = values["secret"].strip()
    if secret:
        try:
            secret_key(secret)
        except SecretError as exc:
            form.errors["secret"] = str(exc)
    try:
        request = IntegrationIn.model_validate(body)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "url"
            form.errors.setdefault(name, error["msg"].removeprefix("Value error, "))
        place_error(form)
        return form, None
    return form, None if form.errors else request


# The "only when" rows: an entity's ticked subscription with its condition, and back


def _key_of(item: SubscriptionItem) -> str:
    text = item if isinstance(item, str) else str(item.get("subscription", ""))
    return text.partition(":")[0].strip()


def _as_ticked(text: str, key: str) -> str:
    """``text`` as the boxes would write it back (``key:created,updated``, ``key:*``)."""
    ticked, _ = ticks_from_events([text], [key])
    return next((item for item in events_from_ticks(sorted(ticked), "") if isinstance(item, str)), "")


def shown_conditions(events: list[SubscriptionItem], entity_keys: list[str],
                     kinds: Mapping[str, Kinds]) -> tuple[list[SubscriptionItem], dict[str, EntityRows]]:
    """The stored subscriptions with those the boxes and rows show exactly as their plain text, and the rows.

    An entity's conditional subscription becomes boxes and rows only when it is the entity's one
    subscription and they save it back unchanged; any other stays JSON in the other subscriptions."""
    keys = [_key_of(item) for item in events]
    shown: list[SubscriptionItem] = []
    conditions: dict[str, EntityRows] = {}
    for item, key in zip(events, keys, strict=True):
        if isinstance(item, dict) and key in entity_keys and keys.count(key) == 1:
            rows = condition_rows(item.get("when"), kinds.get(key, {}))
            text = str(item.get("subscription"))
            if rows is not None and _as_ticked(text, key) == text:
                conditions[key] = rows
                item = text
        shown.append(item)
    return shown, conditions


def with_conditions(ticked: list[SubscriptionItem], form: IntegrationForm,
                    kinds: Mapping[str, Kinds]) -> list[SubscriptionItem]:
    """The ticked subscriptions, each with its entity's rows as its condition (``form.origins`` remembers which)."""
    events = [_with_rows(item, index, form, kinds) for index, item in enumerate(ticked)]
    ticked_keys = {_key_of(item) for item in ticked}
    for key, rows in form.conditions.items():
        if key not in ticked_keys and any(not row.blank() for row in rows.rows):
            form.errors[f"only:{key}"] = f"tick at least one operation of {key} for its \"only when\" rows"
    return events


def _with_rows(item: SubscriptionItem, index: int, form: IntegrationForm,
               kinds: Mapping[str, Kinds]) -> SubscriptionItem:
    """``item`` (the ``index``-th subscription) with its entity's rows as its condition, if it has any."""
    key = _key_of(item)
    rows = form.conditions.get(key)
    if rows is None:
        return item
    try:
        when = rows_condition(rows, kinds.get(key, {}))
    except RowsError as exc:
        form.errors[f"only:{key}"] = str(exc)
        return item
    if when is None:
        return item
    form.origins[index] = (key, [i for i, row in enumerate(rows.rows) if not row.blank()])
    return {"subscription": item, "when": when}


_PLACE = re.compile(r"^events\[(\d+)\]\.when(?:\.(?:all_of|any_of)\[(\d+)\])?")


def place_error(form: IntegrationForm) -> None:
    """Show an error about a condition the rows made next to those rows (the checks' own words)."""
    found = _PLACE.match(form.errors.get("events", ""))
    if found is None or int(found[1]) not in form.origins:
        return
    key, filled = form.origins[int(found[1])]
    form.errors[f"only:{key}"] = form.errors.pop("events")
    part = int(found[2]) if found[2] else 0
    if part < len(filled):
        form.error_rows[key] = filled[part]
