"""Which integrations want an event: subscriptions of the form ``ENTITY_KEY:OPERATIONS``.

``flows/comments:created,updated`` subscribes to two operations of one entity key;
``flows/*:*`` or ``*`` to everything. Entity keys may use ``*`` and ``?`` wildcards.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from models.settings import EntitySettings
from publisher.errors import SubscriptionError

OPERATIONS = frozenset({"created", "updated", "deleted"})


@dataclass(frozen=True, slots=True)
class Subscription:
    entity_key: re.Pattern[str]
    operations: frozenset[str]
    text: str

    def matches(self, entity_key: str, operation: str) -> bool:
        return operation in self.operations and self.entity_key.fullmatch(entity_key) is not None


@functools.lru_cache(maxsize=4096)  # compiled once per distinct text, in a bounded cache
def parse_subscription(text: str) -> Subscription:
    """Parse ``KEY[:OPS]``; ``OPS`` is a comma list of created/updated/deleted or ``*`` (default)."""
    key, _, ops = text.strip().partition(":")
    if not key:
        raise SubscriptionError(f"subscription {text!r}: the entity key is empty")
    names = {op.strip() for op in (ops or "*").split(",") if op.strip()}
    if names == {"*"}:
        names = set(OPERATIONS)
    unknown = names - OPERATIONS
    if unknown or not names:
        raise SubscriptionError(f"subscription {text!r}: unknown operation(s) {', '.join(sorted(unknown)) or '(none)'}"
                                f"; use created, updated, deleted or *")
    return Subscription(re.compile(fnmatch.translate(key)), frozenset(names), text.strip())


def matches_any(subscriptions: list[Subscription], entity_key: str, operation: str) -> bool:
    return any(subscription.matches(entity_key, operation) for subscription in subscriptions)


def check_known_keys(texts: list[str], entities: Sequence[EntitySettings]) -> None:
    """Refuse a subscription naming an entity key this deployment does not capture (a typo, most often).

    Patterns with ``*`` or ``?`` stay allowed; without configured entities nothing can be checked.
    """
    known = sorted({entity.entity_key for entity in entities})
    for text in texts if known else ():
        key = text.strip().partition(":")[0]
        if not any(ch in key for ch in "*?[") and key not in known:
            raise SubscriptionError(f"subscription {text!r}: unknown entity key {key!r}; known keys: "
                                    f"{', '.join(known)}")
