"""A sample "as if ...": the new and old values typed on the integration page, and what the conditions made of it.

``status=approved`` (the new row) and ``status=review`` (the old row) make the example an update
from review to approved (``models.samples.as_if``); several properties are comma separated.
Values are typed as the "only when" rows type them (``control.portal.condition_rows``), and
``null`` sets a property to null.
"""

from __future__ import annotations

from control.portal.condition_rows import Kinds, parse_value, split_list
from publisher.store import Integration

Values = dict[str, str | int | float | bool | None]


def parse_as_if(text: str, kinds: Kinds, where: str = "new") -> Values | None:
    """The properties of ``name=value, ...`` (None when empty); ``ValueError`` names a pair without ``=``."""
    values: Values = {}
    for pair in split_list(text):
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"as if, {where} row: write name=value, not {pair.strip()[:80]!r}")
        kind = kinds.get(name.strip(), "json")
        values[name.strip()] = None if value.strip() == "null" else parse_value(value, kind)
    return values or None


def verdict(integration: Integration, entity_key: str, operation: str, subscribed: bool) -> str:
    """Whether the integration would have received the sample, and if not, why: its conditions or no subscription."""
    if subscribed:
        return "matched: the integration would have received this event"
    if any(subscription.covers(entity_key, operation) for subscription in integration.subscriptions):
        return f"not matched: it subscribes to {entity_key}:{operation}, but its conditions filter this event out"
    return f"not matched: it does not subscribe to {entity_key}:{operation}"
