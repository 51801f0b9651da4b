"""The integration directory: this process's one current copy of every integration's config.

Live delivery asks it who may receive an organization's events, the dispatcher asks it for an
integration's config, and both hear from it when one changes. It reloads what moved in the
store (``updated_at``, and secrets whose rotation overlap ended) every ``refresh_seconds`` - the
bound on how soon a change made through the API or the CLI takes effect here - and everything
once a minute. A disable decided here (a receiver's 410) takes effect here at
once, and in the store.

Live events are routed among the organization's integrations subscribed to the event's entity
key and operation only (``candidates``), remembered per key and operation until one of the
organization's integrations changes: with many integrations each on its own key, looking at
every one of them for every event was most of routing's cost. Each such list is kept with its
index by the values the integrations' conditions require (``publisher.routing.candidates``), built and
dropped together with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from models.errors import StoreError
from models.operational import OPERATIONAL_KEY, OPERATOR_ORGANIZATION
from publisher.routing.candidates import Candidates, candidates_for
from publisher.store import Integration

log = logging.getLogger("walhook.publisher")

Listener = Callable[[Integration | None, Integration | None], None]
"""Told ``(before, after)`` when an integration changes; None before: new; None after: deleted."""

# Rows are found by updated_at > last seen minus this: a transaction that began earlier (its now())
# but committed after our last look is still seen.
_OVERLAP = timedelta(seconds=30)
FULL_RELOAD_SECONDS = 60.0
_KEYS_KEPT = 1024  # (entity key, operation) pairs remembered per organization; keys come from records


class DirectoryStore(Protocol):
    """What the directory reads of the store: integrations that changed, and a disable it decides."""

    async def integrations_changed(self, since: datetime | None, known: Mapping[int, Integration] | None = None
                                   ) -> tuple[list[Integration], list[int]]: ...

    async def set_enabled(self, integration_id: int, enabled: bool, reason: str | None = None,
                          positions: dict[int, int] | None = None) -> None: ...


class IntegrationDirectory:
    """Integrations by id and by organization, kept current from the store."""

    def __init__(self, store: DirectoryStore, refresh_seconds: float = 2.0) -> None:
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._by_id: dict[int, Integration] = {}
        self._of: dict[str, dict[int, Integration]] = {}
        self._enabled_of: dict[str, list[Integration]] = {}
        self._subscribed: dict[str, dict[tuple[str, str], Candidates]] = {}
        self._listeners: list[Listener] = []
        self._seen: datetime | None = None

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, integration_id: int) -> Integration | None:
        return self._by_id.get(integration_id)

    def enabled_of(self, organization_id: str) -> list[Integration]:
        """The organization's enabled integrations: the candidates for its live events."""
        return self._enabled_of.get(organization_id, [])

    def candidates(self, organization_id: str, entity_key: str, operation: str) -> Candidates:
        """The enabled integrations of ``enabled_of``, in its order, with a subscription covering the entity key
        and operation (conditions aside) - the only ones that can receive, or filter out, such an event - with
        their index by required value, for ``route_candidates``."""
        enabled = self.enabled_of(organization_id)
        if entity_key == OPERATIONAL_KEY and organization_id != OPERATOR_ORGANIZATION:
            enabled = [*enabled, *self.enabled_of(OPERATOR_ORGANIZATION)]  # the operator hears every organization's
        if not enabled:  # nothing kept for organizations the records name but the store does not have
            return Candidates(entity_key, operation, [])
        known = self._subscribed.setdefault(organization_id, {})
        found = known.get((entity_key, operation))
        if found is None:
            if len(known) >= _KEYS_KEPT:
                known.clear()
            found = known[(entity_key, operation)] = candidates_for(enabled, entity_key, operation)
        return found

    def enabled_count(self) -> int:
        return sum(len(integrations) for integrations in self._enabled_of.values())

    async def load(self, stop: asyncio.Event) -> None:
        """The first full load; waits out a store outage (or returns when asked to stop)."""
        while not stop.is_set():
            try:
                await self.refresh(full=True)
                return
            except StoreError as exc:
                log.error("cannot load the integrations, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until asked to stop; a store outage only delays the next refresh."""
        loop = asyncio.get_running_loop()
        full_at = loop.time() + FULL_RELOAD_SECONDS
        while not stop.is_set():
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh(full=loop.time() >= full_at)
            except StoreError as exc:
                log.warning("cannot refresh the integrations: %s", exc)
                continue
            if loop.time() >= full_at:
                full_at = loop.time() + FULL_RELOAD_SECONDS

    async def refresh(self, full: bool = False) -> None:
        """Take in what changed in the store since the last look (everything when ``full``)."""
        since = None if full or self._seen is None else self._seen - _OVERLAP
        changed, ids = await self._store.integrations_changed(since, self._by_id)
        for integration in changed:
            before = self._by_id.get(integration.id)
            if before != integration:  # its row, or its secrets, changed
                self._put(before, integration)
        for gone in set(self._by_id) - set(ids):
            self._put(self._by_id[gone], None)
        stamps = [i.updated_at for i in changed if i.updated_at is not None]
        if stamps:
            self._seen = max([*stamps, *([self._seen] if self._seen else [])])

    async def disable(self, integration: Integration, reason: str | None,
                      positions: dict[int, int] | None = None) -> None:
        """Disable here at once; in the store too when ``reason`` is given (it is already, otherwise).

        ``positions`` (taken before this call) is where the consumers stood: the catch-up starts there.
        """
        if reason is not None:
            await self._store.set_enabled(integration.id, False, reason, positions)
        current = self._by_id.get(integration.id, integration)
        self._put(current, replace(current, enabled=False, disabled_reason=reason or current.disabled_reason))

    def _put(self, before: Integration | None, after: Integration | None) -> None:
        for changed in {i.organization_id for i in (before, after) if i is not None}:
            self._subscribed.pop(changed, None)  # the organization's candidates are worked out again
            if changed == OPERATOR_ORGANIZATION:  # every organization's operational events reach the operator
                for known in self._subscribed.values():
                    for pair in [pair for pair in known if pair[0] == OPERATIONAL_KEY]:
                        known.pop(pair)
        if before is not None:
            self._by_id.pop(before.id, None)
            self._of.get(before.organization_id, {}).pop(before.id, None)
            self._enabled_of[before.organization_id] = _enabled(self._of.get(before.organization_id, {}))
        if after is not None:
            self._by_id[after.id] = after
            of = self._of.setdefault(after.organization_id, {})
            of[after.id] = after
            self._enabled_of[after.organization_id] = _enabled(of)
        for listener in self._listeners:
            listener(before, after)


def _enabled(integrations: dict[int, Integration]) -> list[Integration]:
    return [integration for _, integration in sorted(integrations.items()) if integration.enabled]
