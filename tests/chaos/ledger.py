"""The ledger: what the database committed against what each receiver got.

For every (committed change, subscribed integration) at least one verified request answered 2xx
(``lost`` counts the ones without); nothing delivered that was not committed (``phantom``); per entity
and integration the first successful deliveries follow commit order (``out_of_order`` counts the ones
that arrived after a later change of their entity); every request of one (event, integration) carries
the same webhook-id, ``{eventId}_i{integrationId}`` (``wrong_ids``); every note carries the body
committed with its version, TOAST-sized or not, changed or not (``wrong_values``); every request
verified (``unverified``); no organization receives a row state (``value`` or ``oldValue``, known by
its version) that was committed under another organization (``leaked``).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.receivers import Hit
from tests.chaos.workload import BY_ENTITY_KEY, TABLES, Change


@dataclass(frozen=True)
class Subscriber:
    """An integration as the ledger sees it: its organization and what it subscribed to."""

    name: str
    organization: str
    events: tuple[str, ...]  # "ENTITY_KEY:OPS" like the store's subscriptions
    id: int = 0

    def wants(self, change: Change) -> bool:
        key = next(table.entity_key for table in TABLES if table.name == change.table)
        for text in self.events:
            pattern, _, ops = text.partition(":")
            if fnmatch.fnmatchcase(key, pattern) and (ops in ("", "*") or change.op in ops.split(",")):
                return change.organization == self.organization
        return False


def change_of(event: dict[str, Any]) -> Change | None:
    """The committed change an event claims to be, from its entity key, id, operation and version."""
    table = BY_ENTITY_KEY.get(event.get("entityKey", ""))
    data = event.get("data") or {}
    side = data.get("oldValue") if event.get("operationType") == "deleted" else data.get("value")
    if table is None or not side:
        return None
    body = side["properties"].get("body")
    return Change(table, int(event["entityId"]), int(side["properties"]["version"]), event["operationType"],
                  None if body is None else len(body))


@dataclass
class Summary:
    """The comparison's numbers; ``line()`` is the one-line summary the suite prints."""

    scenario: str
    committed: int
    expected: int
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    phantom: int = 0
    wrong_ids: int = 0
    wrong_values: int = 0  # a note whose (TOAST-sized) body is not the one committed
    leaked: int = 0  # a row state committed under another organization than the receiver's
    unverified: int = 0
    requests: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.out_of_order or self.phantom or self.wrong_ids or self.wrong_values
                    or self.leaked or self.unverified)

    def line(self) -> str:
        return (f"[{self.scenario}] changes committed={self.committed} deliveries expected={self.expected} "
                f"delivered={self.delivered} duplicates={self.duplicates} lost={self.lost} "
                f"out of order={self.out_of_order} phantom={self.phantom} wrong ids={self.wrong_ids} "
                f"wrong values={self.wrong_values} leaked={self.leaked} "
                f"unverified={self.unverified} requests={self.requests}")


class Ledger:
    """Expected deliveries from the committed changes; compares with the receivers' hits."""

    def __init__(self, changes: list[Change], subscribers: list[Subscriber]) -> None:
        self.changes = changes
        self.subscribers = {subscriber.name: subscriber for subscriber in subscribers}
        self.position = {change: index for index, change in enumerate(changes)}  # commit order
        self.committed = {change: change for change in changes}  # to look up what was written
        # (table, id, version) -> the organization the row had when that version was committed
        self.owners = {(c.table, c.id, c.version): c.organization for c in changes if c.op != "deleted"}
        self.expected = {(s.name, change) for s in subscribers for change in changes if s.wants(change)}
        self._confirmed: set[tuple[str, Change]] = set()
        self._scanned = 0

    def outstanding(self, hits: list[Hit]) -> int:
        """Expected deliveries no receiver confirmed yet; looks only at hits new since the last call."""
        self._confirmed |= _delivered(hits[self._scanned:])
        self._scanned = len(hits)
        return len(self.expected - self._confirmed)

    def compare(self, scenario: str, hits: list[Hit]) -> Summary:
        """Every check of the module docstring, in one pass over the hits (in arrival order)."""
        summary = Summary(scenario, len(self.changes), len(self.expected), requests=len(hits))
        firsts: set[tuple[str, Change]] = set()
        newest: dict[tuple[str, str, int], int] = {}  # (integration, table, id) -> newest position delivered
        ids: dict[tuple[str, str], set[str]] = defaultdict(set)
        for hit in hits:
            self._check(hit, summary, firsts, newest, ids)
        summary.delivered = len(firsts & self.expected)
        summary.lost = len(self.expected - firsts)
        if summary.lost:
            summary.examples.append(f"lost e.g. {sorted(self.expected - firsts, key=str)[:3]}")
        wrong = {key: found for key, found in ids.items() if len(found) > 1}
        summary.wrong_ids += len(wrong)
        return summary

    def _check(self, hit: Hit, summary: Summary, firsts: set[tuple[str, Change]],
               newest: dict[tuple[str, str, int], int], ids: dict[tuple[str, str], set[str]]) -> None:
        if hit.event is None:
            summary.unverified += 1
            return
        subscriber = self.subscribers[hit.name]
        ids[(hit.name, hit.event["eventId"])].add(hit.webhook_id)
        if hit.webhook_id != f"{hit.event['eventId']}_i{subscriber.id}":
            summary.wrong_ids += 1
        self._check_owners(hit, subscriber, summary)
        change = change_of(hit.event)
        if change is None or (hit.name, change) not in self.expected:
            summary.phantom += 1
            summary.examples.append(f"phantom {hit.name} {hit.event.get('entityPath')} {change}")
            return
        if change.body_length != self.committed[change].body_length:
            summary.wrong_values += 1
            summary.examples.append(f"wrong value {hit.name} {change}: body of {change.body_length} characters, "
                                    f"committed {self.committed[change].body_length}")
        if not hit.delivered:
            return
        if (hit.name, change) in firsts:
            summary.duplicates += 1
            return
        firsts.add((hit.name, change))
        entity = (hit.name, change.table, change.id)
        position = self.position[change]
        if position < newest.get(entity, -1):
            summary.out_of_order += 1
            summary.examples.append(f"out of order {hit.name} {change} after {self.changes[newest[entity]]}")
        newest[entity] = max(position, newest.get(entity, -1))


    def _check_owners(self, hit: Hit, subscriber: Subscriber, summary: Summary) -> None:
        """Every row state in the event must have been committed under the receiver's organization."""
        assert hit.event is not None
        table = BY_ENTITY_KEY.get(hit.event.get("entityKey", ""))
        for side in ("value", "oldValue"):
            state = (hit.event.get("data") or {}).get(side)
            if not state or table is None:
                continue
            owner = self.owners.get((table, int(hit.event["entityId"]), int(state["properties"]["version"])))
            if owner is not None and owner != subscriber.organization:
                summary.leaked += 1
                summary.examples.append(f"leaked {subscriber.organization} got {side} of {table} "
                                        f"{hit.event['entityId']} v{state['properties']['version']} from {owner}")


def _delivered(hits: list[Hit]) -> set[tuple[str, Change]]:
    return {(hit.name, change) for hit in hits if hit.delivered and hit.event is not None
            and (change := change_of(hit.event)) is not None}
