"""Which integrations want an event: subscriptions of the form ``ENTITY_KEY:OPERATIONS``, with conditions.

``flows/comments:created,updated`` subscribes to two operations of one entity key;
``flows/*:*`` or ``*`` to every change. Entity keys may use ``*`` and ``?`` wildcards.
``read`` (the rows of a backfill) is named explicitly, ``flows/comments:read`` or
``flows/*:*,read``: ``*`` means the three change operations only, so that a backfill does not
flood integrations that never asked for existing rows.
A subscription with conditions is an object,
``{"subscription": "flows/packets:updated", "when": {"property": "status", "to": "approved"}}``
(the condition form: ``publisher.routing.conditions``); a plain string has none. Each distinct
subscription is parsed and compiled once, in a bounded cache.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.operational import KINDS, OPERATIONAL_KEY
from models.settings import EntitySettings
from publisher.errors import SubscriptionError
from publisher.routing.conditions import NO_CHANGE, Change, Condition, ConditionError, compile_condition, nodes
from publisher.routing.shapes import EntityShape, check_condition

SubscriptionItem = str | dict[str, Any]
"""A subscription as the API, the CLI and the store hold it: its text, or an object with conditions."""

CHANGES = frozenset({"created", "updated", "deleted"})  # what ``*`` stands for
OPERATIONS = CHANGES | {"read"}
CHANGE_NAMES = ("created", "updated", "deleted")
OPERATIONAL = frozenset(KINDS)  # what ``walhook/operational:*`` stands for
_KEYS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Subscription:
    entity_key: re.Pattern[str]
    operations: frozenset[str]
    text: str
    condition: Condition | None = None
    when: bytes | None = None  # the condition's JSON as given (canonical), to show it back
    # Entity key -> whether the pattern matches it: a dict lookup per event instead of a regex match.
    keys: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def covers(self, entity_key: str, operation: str) -> bool:
        """The entity key and operation match (conditions aside)."""
        if operation not in self.operations:
            return False
        known = self.keys.get(entity_key)
        return self.learn(entity_key) if known is None else known

    def learn(self, entity_key: str) -> bool:
        """Match ``entity_key`` against the pattern and remember it (a bounded memory: keys come from records)."""
        if len(self.keys) >= _KEYS_KEPT:
            self.keys.clear()
        found = self.keys[entity_key] = self.entity_key.fullmatch(entity_key) is not None
        return found

    def matches(self, entity_key: str, operation: str, change: Change = NO_CHANGE) -> bool:
        return self.covers(entity_key, operation) and (self.condition is None or self.condition.holds(change))

    def describe(self) -> SubscriptionItem:
        """The subscription in the form it was given (a fresh copy: callers may change it)."""
        if self.when is None:
            return self.text
        return {"subscription": self.text, "when": orjson.loads(self.when)}


@functools.lru_cache(maxsize=4096)  # compiled once per distinct text, in a bounded cache
def parse_subscription(text: str) -> Subscription:
    """Parse ``KEY[:OPS]``; ``OPS`` is a comma list of created, updated, deleted, read and ``*`` (the three
    changes, the default)."""
    key, _, ops = text.strip().partition(":")
    if not key:
        raise SubscriptionError(f"subscription {text!r}: the entity key is empty")
    names = {op.strip() for op in (ops or "*").split(",") if op.strip()}
    # Operational events have operations of their own, which no other key's ``*`` covers: opt-in by name.
    allowed, star = (OPERATIONAL, OPERATIONAL) if key.strip() == OPERATIONAL_KEY else (OPERATIONS, CHANGES)
    if "*" in names:
        names = (names - {"*"}) | star
    unknown = names - allowed
    if unknown or not names:
        choices = ", ".join(sorted(OPERATIONAL) if star is OPERATIONAL else (*CHANGE_NAMES, "read"))
        raise SubscriptionError(f"subscription {text!r}: unknown operation(s) {', '.join(sorted(unknown)) or '(none)'}"
                                f"; use {choices} or *")
    return Subscription(re.compile(fnmatch.translate(key)), frozenset(names), text.strip())


def parse_item(item: Any, where: str = "events") -> Subscription:
    """A subscription as the API, CLI or store holds it: ``"KEY:OPS"`` or ``{"subscription": ..., "when": ...}``."""
    if isinstance(item, str):
        return parse_subscription(item)
    if not isinstance(item, dict) or set(item) != {"subscription", "when"} or not isinstance(item["subscription"], str):
        raise SubscriptionError(f"{where}: a subscription is \"ENTITY_KEY:OPS\" or "
                                "{\"subscription\": \"ENTITY_KEY:OPS\", \"when\": {condition}}")
    try:
        when = orjson.dumps(item["when"], option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # not JSON (a caller's own object): not a condition either
        raise ConditionError(f"{where}.when: not JSON: {exc}") from exc
    return _with_condition(item["subscription"], when, where)


@functools.lru_cache(maxsize=4096)  # one compiled condition per distinct (subscription, condition)
def _with_condition(text: str, when: bytes, where: str) -> Subscription:
    plain = parse_subscription(text)
    condition = compile_condition(orjson.loads(when), f"{where}.when")
    return Subscription(plain.entity_key, plain.operations, plain.text, condition, when)


def cost(subscriptions: Iterable[Subscription]) -> int:
    """What routing an event through these subscriptions may cost: one per subscription, plus its
    condition's tests (``[api] max_condition_cost_per_organization`` bounds an organization's sum)."""
    return sum(1 + (nodes(s.condition) if s.condition is not None else 0) for s in subscriptions)


def parse_items(items: Iterable[Any]) -> list[Subscription]:
    """Every subscription of a list, each error naming its place (``events[1].when.all_of[0]: ...``)."""
    return [parse_item(item, f"events[{i}]") for i, item in enumerate(items)]


def matches_any(subscriptions: list[Subscription], entity_key: str, operation: str,
                change: Change = NO_CHANGE) -> bool:
    return subscribed(subscriptions, entity_key, operation, change) is True


def subscribed(subscriptions: list[Subscription], entity_key: str, operation: str,
               change: Change = NO_CHANGE) -> bool | None:
    """True: a subscription matches and its conditions hold. False: some match the entity key and
    operation, but none of their conditions holds (the event is filtered out). None: none matches."""
    covered = False
    for subscription in subscriptions:  # the hot path: one pass, each condition's prebuilt test
        if subscription.covers(entity_key, operation):
            if subscription.condition is None or subscription.condition.test(change):
                return True
            covered = True
    return False if covered else None


def covers_key(subscriptions: list[Subscription], entity_key: str) -> bool:
    """Whether any subscription names ``entity_key``, whatever its operations and conditions."""
    for subscription in subscriptions:
        known = subscription.keys.get(entity_key)
        if subscription.learn(entity_key) if known is None else known:
            return True
    return False


def check_conditions(subscriptions: Sequence[Subscription], shapes: Sequence[EntityShape]) -> None:
    """Refuse a condition that cannot hold on the entities its subscription matches (``publisher.routing.shapes``)."""
    for subscription in subscriptions:
        matched = [shape for shape in shapes if subscription.entity_key.fullmatch(shape.entity_key)]
        if subscription.condition is not None:
            check_condition(subscription.condition, matched)


def check_known_keys(items: Sequence[SubscriptionItem], entities: Sequence[EntitySettings]) -> None:
    """Refuse a subscription naming an entity key this deployment does not capture (a typo, most often).

    Patterns with ``*`` or ``?`` stay allowed; without configured entities nothing can be checked.
    """
    known = sorted({entity.entity_key for entity in entities})
    for text in (parse_item(item).text for item in items) if known else ():
        key = text.partition(":")[0]
        if not any(ch in key for ch in "*?[") and key not in known and key != OPERATIONAL_KEY:
            raise SubscriptionError(f"subscription {text!r}: unknown entity key {key!r}; known keys: "
                                    f"{', '.join(known)}")
