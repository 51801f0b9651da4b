"""Integrations: where an organization's webhooks go, what they subscribe to, and their state.

Every change of an integration's config (its row, or its secrets) moves ``updated_at``: the
publishers' directories reload what moved since they last looked.

Custom headers often carry a receiver's credentials, so with a keyring they are sealed like the
signing secrets: the ``headers`` column then holds ``{"(sealed)": {key id, nonce, ciphertext}}``
(not a header name anyone may set), bound to the organization.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from models.errors import Conflict, NotFound, SecretError
from models.secretbox import Sealed
from publisher.routing.matching import Subscription, SubscriptionItem, cost, parse_items
from publisher.sending.ordering import HELD
from publisher.store.engine import as_json
from publisher.store.rows import Integration
from publisher.store.tenants import TenantStore

_CHANGEABLE = {"url", "name", "events", "environment", "ordering", "batch_size", "rate_limit", "headers",
               "concurrency", "send_traceparent"}
_JSON = ("events", "headers")
SEALED = "(sealed)"
_PURPOSE = "custom headers"

# Integration ids are drawn at random (the store's default, migration 82), so an id tells no organization how
# many integrations the others have; a draw that hits a taken id is drawn again.
ID_DRAWS = 5


class IntegrationStore(TenantStore):
    """Integrations and their health."""

    async def add_integration(self, organization_id: str, url: str, events: Sequence[SubscriptionItem],
                              name: str = "", *, environment: str | None = None, ordering: str = "entity",
                              batch_size: int = 1, rate_limit: float | None = None,
                              headers: dict[str, str] | None = None, concurrency: int | None = None,
                              send_traceparent: bool = False, limit: int | None = None,
                              cost_limit: int | None = None) -> int:
        """A new integration; ``limit`` caps how many an organization may have, ``cost_limit`` what routing
        an event through all their subscriptions may cost (``publisher.routing.matching.cost``); ``Conflict`` past."""
        parse_items(events)  # refuse a bad subscription before storing it
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        await self._within_cost(organization_id, None, events, cost_limit)
        values = {"org": organization_id, "name": name or url, "url": url, "events": as_json(list(events)),
                  "environment": environment, "ordering": ordering, "batch_size": batch_size,
                  "rate_limit": rate_limit, "headers": self._stored_headers(organization_id, headers),
                  "concurrency": concurrency, "send_traceparent": send_traceparent, "limit": limit}
        for _ in range(ID_DRAWS):
            rows = await self._rows(
                "INSERT INTO {s}.integrations (organization_id, name, url, events, environment, ordering, "
                "batch_size, rate_limit, headers, concurrency, send_traceparent) SELECT :org, :name, :url, "
                "CAST(:events AS jsonb), :environment, :ordering, :batch_size, :rate_limit, CAST(:headers AS jsonb), "
                ":concurrency, :send_traceparent "
                "WHERE CAST(:limit AS int) IS NULL OR (SELECT count(*) FROM {s}.integrations "
                "WHERE organization_id = :org) < :limit ON CONFLICT (id) DO NOTHING RETURNING id", values)
            if rows:
                return int(rows[0]["id"])
            if limit is not None and await self._integration_count(organization_id) >= limit:
                raise Conflict(f"organization {organization_id!r} already has {limit} integrations, the most "
                               "allowed ([api] max_integrations_per_organization)")
        raise Conflict(f"no free integration id in {ID_DRAWS} draws; try again")  # 1 in 10^5 per draw at 10,000

    async def _integration_count(self, organization_id: str) -> int:
        rows = await self._rows("SELECT count(*) AS n FROM {s}.integrations WHERE organization_id = :org",
                                {"org": organization_id})
        return int(rows[0]["n"])

    async def integrations_of(self, organization_id: str | None = None, include_disabled: bool = False
                              ) -> list[Integration]:
        """Integrations (of one organization, or all), each with its active secrets."""
        where = ["TRUE"]
        if organization_id is not None:
            where.append("organization_id = :org")
        if not include_disabled:
            where.append("enabled")
        rows = await self._rows(f"SELECT * FROM {{s}}.integrations WHERE {' AND '.join(where)} "
                                "ORDER BY created_at, id",
                                {"org": organization_id})
        return await self._with_secrets(rows)

    async def integrations_changed(self, since: datetime | None, known: Mapping[int, Integration] | None = None
                                   ) -> tuple[list[Integration], list[int]]:
        """Integrations whose config moved after ``since`` (all when None), and the ids of every integration.

        The ids let a directory notice deletions without reloading what did not change. ``known`` (the
        caller's current copies) keeps the compiled subscriptions of integrations whose row did not
        change: a full reload compiles only what changed, and many at once off the event loop.
        """
        # A secret whose overlap ended is a config change too, though nothing wrote the integration's row.
        rows = await self._rows(
            "SELECT * FROM {s}.integrations WHERE CAST(:since AS timestamptz) IS NULL OR updated_at > :since "
            "OR organization_id IN (SELECT organization_id FROM {s}.signing_secrets "
            "WHERE expires_at > :since AND expires_at <= now()) ORDER BY id", {"since": since})
        ids = [int(row["id"]) for row in await self._rows("SELECT id FROM {s}.integrations")]
        return await self._with_secrets(rows, await _subscriptions_of(rows, known or {})), ids

    async def integration(self, integration_id: int) -> Integration:
        rows = await self._rows("SELECT * FROM {s}.integrations WHERE id = :id", {"id": integration_id})
        if not rows:
            raise NotFound(f"integration {integration_id} does not exist")
        return (await self._with_secrets(rows))[0]

    async def integration_of(self, organization_id: str, integration_id: int) -> Integration:
        """An integration of this organization; another organization's is ``NotFound`` too."""
        rows = await self._rows("SELECT * FROM {s}.integrations WHERE id = :id AND organization_id = :org",
                                {"id": integration_id, "org": organization_id})
        if not rows:
            raise NotFound(f"integration {integration_id} does not exist")
        return (await self._with_secrets(rows))[0]

    async def _with_secrets(self, rows: list[dict[str, Any]],
                            compiled: Mapping[int, list[Subscription]] | None = None) -> list[Integration]:
        secrets = await self._active_secrets(sorted({row["organization_id"] for row in rows}))
        compiled = compiled or {}
        return [Integration(
            id=row["id"], organization_id=row["organization_id"], name=row["name"], url=row["url"],
            subscriptions=compiled.get(row["id"]) or parse_items(row["events"]),
            # An integration's own secrets override the organization's.
            secrets=secrets.get((row["organization_id"], row["id"])) or secrets.get((row["organization_id"], None), []),
            enabled=row["enabled"], disabled_reason=row["disabled_reason"], environment=row["environment"],
            ordering=row["ordering"], batch_size=row["batch_size"], rate_limit=row["rate_limit"],
            headers=self._opened_headers(row), failing_since=row["failing_since"], concurrency=row["concurrency"],
            disabled_at=row["disabled_at"], catching_up=row["catching_up_job"] is not None,
            updated_at=row["updated_at"], send_traceparent=row["send_traceparent"]) for row in rows]

    def _stored_headers(self, organization_id: str, headers: dict[str, str] | None) -> str:
        """The ``headers`` column's value: sealed with the current key, or plain without a keyring."""
        if self.keyring is None or not headers:
            return as_json(headers or {})
        sealed = self.keyring.seal(as_json(headers), organization_id, None, _PURPOSE)
        return as_json({SEALED: {"key_id": sealed.key_id, "nonce": base64.b64encode(sealed.nonce).decode(),
                                 "ciphertext": base64.b64encode(sealed.ciphertext).decode()}})

    def _opened_headers(self, row: dict[str, Any]) -> dict[str, str]:
        box = row["headers"].get(SEALED)
        if box is None:
            return dict(row["headers"])
        if self.keyring is None:
            raise SecretError(f"the custom headers of integration {row['id']} are encrypted with key id "
                              f"{box['key_id']!r}, but no [store] secret_keys are configured")
        sealed = Sealed(box["key_id"], base64.b64decode(box["nonce"]), base64.b64decode(box["ciphertext"]))
        return dict(orjson.loads(self.keyring.unseal(sealed, str(row["organization_id"]), None, _PURPOSE)))

    async def reseal_secrets(self, only_plain: bool = False) -> int:
        """The signing secrets (see ``TenantStore``), then every integration's custom headers."""
        done = await super().reseal_secrets(only_plain)
        assert self.keyring is not None
        rows = [row for row in await self._rows("SELECT id, organization_id, headers FROM {s}.integrations "
                                                "WHERE headers <> '{}' ORDER BY id")
                if SEALED not in row["headers"] or (not only_plain and row["headers"][SEALED]["key_id"]
                != self.keyring.current)]
        for row in rows:  # few: integrations with custom headers, each resealed where it is
            await self._rows("UPDATE {s}.integrations SET headers = CAST(:headers AS jsonb) WHERE id = :id "
                             "AND headers = CAST(:old AS jsonb)",
                             {"id": row["id"], "old": as_json(row["headers"]),
                              "headers": self._stored_headers(str(row["organization_id"]), self._opened_headers(row))})
        return done + len(rows)

    async def update_integration(self, organization_id: str, integration_id: int, changes: dict[str, Any],
                                 cost_limit: int | None = None) -> None:
        """Change the given fields (url, name, events, environment, ordering, batch_size, rate_limit, headers,
        concurrency, send_traceparent); a field given as None goes back to its default. ``cost_limit``: see
        ``add_integration``."""
        changes = {**changes, "headers": changes.get("headers") or {}} if "headers" in changes else changes
        if changes.get("ordering", "") is None:
            changes["ordering"] = "entity"
        if changes.get("batch_size", 0) is None:
            changes["batch_size"] = 1
        if changes.get("send_traceparent", False) is None:
            changes["send_traceparent"] = False
        fields = {k: (as_json(v) if k in _JSON else v) for k, v in changes.items() if k in _CHANGEABLE}
        if "headers" in fields:
            fields["headers"] = self._stored_headers(organization_id, changes["headers"])
        parse_items(changes.get("events") or ())
        if changes.get("events") is not None:
            await self._within_cost(organization_id, integration_id, changes["events"], cost_limit)
        if not fields:
            return
        assignments = ", ".join(f"{k} = CAST(:{k} AS jsonb)" if k in _JSON else f"{k} = :{k}" for k in fields)
        if not await self._rows(f"UPDATE {{s}}.integrations SET {assignments}, updated_at = now() "
                                "WHERE id = :id AND organization_id = :org RETURNING id",
                                {**fields, "id": integration_id, "org": organization_id}):
            raise NotFound(f"integration {integration_id} does not exist")

    async def _within_cost(self, organization_id: str, integration_id: int | None, events: Sequence[SubscriptionItem],
                           limit: int | None) -> None:
        """``Conflict`` when the organization's subscriptions, with ``events`` in place of the integration's own,
        would cost more than ``limit`` to route one event."""
        if limit is None:
            return
        rows = await self._rows("SELECT events FROM {s}.integrations WHERE organization_id = :org "
                                "AND id <> coalesce(CAST(:id AS bigint), 0)",
                                {"org": organization_id, "id": integration_id})
        total = cost(parse_items(events)) + sum(cost(parse_items(row["events"])) for row in rows)
        if total > limit:
            raise Conflict(f"the subscriptions and conditions of organization {organization_id!r} would cost "
                           f"{total} tests per event, more than the {limit} allowed "
                           "([api] max_condition_cost_per_organization)")

    async def delete_integration(self, organization_id: str, integration_id: int) -> None:
        if not await self._rows("DELETE FROM {s}.integrations WHERE id = :id AND organization_id = :org RETURNING id",
                                {"id": integration_id, "org": organization_id}):
            raise NotFound(f"integration {integration_id} does not exist")

    async def set_enabled(self, integration_id: int, enabled: bool, reason: str | None = None,
                          positions: dict[int, int] | None = None) -> None:
        """Enable or disable. A disable remembers since when, and where the consumers stood
        (``positions``, see ``publisher.settling.positions``): a later enable replays from there."""
        await self._rows(
            "UPDATE {s}.integrations SET enabled = :enabled, disabled_reason = :reason, "
            "disabled_at = CASE WHEN :enabled THEN NULL ELSE coalesce(disabled_at, now()) END, "
            "disabled_positions = CASE WHEN :enabled THEN NULL "
            "ELSE coalesce(disabled_positions, CAST(:positions AS jsonb)) END, "
            "failing_since = CASE WHEN :enabled THEN NULL ELSE failing_since END, updated_at = now() "
            "WHERE id = :id", {"id": integration_id, "enabled": enabled, "reason": None if enabled else reason,
                               "positions": _positions(positions)})

    async def note_disabled_positions(self, integration_id: int, positions: dict[int, int] | None) -> None:
        """Where the consumers stood when the integration was disabled, if not known yet."""
        if positions is not None:
            await self._rows("UPDATE {s}.integrations SET disabled_positions = CAST(:positions AS jsonb) "
                             "WHERE id = :id AND NOT enabled AND disabled_positions IS NULL",
                             {"id": integration_id, "positions": _positions(positions)})

    async def note_health(self, integration_id: int, succeeded: bool, disable_after: timedelta) -> bool:
        """Track continuous failure; disables the integration past ``disable_after``. True if it did.

        A success after failures also brings the integration's waiting retries forward (they are
        due now, and go in entity order): a receiver back after an outage catches up at once
        instead of waiting out each delivery's schedule.
        """
        if succeeded:
            await self._rows(
                "WITH healed AS (UPDATE {s}.integrations SET failing_since = NULL, updated_at = now() "
                "WHERE id = :id AND failing_since IS NOT NULL RETURNING id), "
                # Locked in id order, as every statement changing many deliveries does (no deadlock).
                "waiting AS MATERIALIZED (SELECT d.id FROM {s}.deliveries d JOIN healed "
                "ON d.integration_id = healed.id WHERE d.status = 'pending' AND d.next_attempt_at > now() "
                f"AND d.next_attempt_at < {HELD} "
                "ORDER BY d.id FOR NO KEY UPDATE OF d) "
                "UPDATE {s}.deliveries d SET next_attempt_at = now() FROM waiting WHERE d.id = waiting.id",
                {"id": integration_id})
            return False
        rows = await self._rows(
            "UPDATE {s}.integrations SET failing_since = coalesce(failing_since, now()), "
            "enabled = CASE WHEN now() - coalesce(failing_since, now()) >= :limit THEN false ELSE enabled END, "
            "disabled_at = CASE WHEN now() - coalesce(failing_since, now()) >= :limit "
            "THEN coalesce(disabled_at, now()) ELSE disabled_at END, "
            "disabled_reason = CASE WHEN now() - coalesce(failing_since, now()) >= :limit "
            "THEN 'failing continuously since ' || coalesce(failing_since, now())::text ELSE disabled_reason END, "
            "updated_at = CASE WHEN failing_since IS NULL THEN now() ELSE updated_at END "
            "WHERE id = :id RETURNING enabled", {"id": integration_id, "limit": disable_after})
        return bool(rows) and not rows[0]["enabled"]


def _positions(positions: dict[int, int] | None) -> str | None:
    return None if positions is None else as_json({str(p): o for p, o in positions.items()})


COMPILE_ON_LOOP = 50
"""Integrations whose subscriptions are compiled on the event loop when none has a condition; more at once, or
any condition (a large one is compiled into a function of its own, ``publisher.routing.generated``), go to a
worker thread, so a reload of thousands of conditions never stalls delivery."""


def _has_condition(items: Any) -> bool:
    return isinstance(items, list) and any(isinstance(item, dict) and "when" in item for item in items)


async def _subscriptions_of(rows: list[dict[str, Any]], known: Mapping[int, Integration]
                            ) -> dict[int, list[Subscription]]:
    """Each row's compiled subscriptions: the known copy's when its row did not change, else compiled."""
    compiled: dict[int, list[Subscription]] = {}
    todo: list[dict[str, Any]] = []
    for row in rows:
        before = known.get(row["id"])
        if before is not None and before.updated_at == row["updated_at"] and before.subscriptions:
            compiled[row["id"]] = before.subscriptions
        else:
            todo.append(row)
    if len(todo) > COMPILE_ON_LOOP or any(_has_condition(row["events"]) for row in todo):
        compiled.update(await asyncio.to_thread(lambda: {row["id"]: parse_items(row["events"]) for row in todo}))
    return compiled
