"""walhook's own tables: organizations, signing secrets, integrations, deliveries and attempts.

SQLAlchemy 2 (async, psycopg 3) on Postgres, in a schema of its own (``[store] schema``,
default ``walhook``) so it can share the source database without touching the app's
tables. The schema is versioned (``publisher.migrations``).

A *delivery* is one event for one integration - the "webhook job" - with its status, attempt
count and next attempt time. An *attempt* is one HTTP request of a delivery, logged with
what was sent and what came back.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from secrets import token_hex, token_urlsafe
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from publisher.errors import Conflict, NotFound, StoreError
from publisher.matching import Subscription, parse_subscription
from publisher.migrations import migrate
from publisher.signing import generate_secret, secret_key

DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class Integration:
    """A webhook integration with the secrets its deliveries are signed with."""

    id: int
    organization_id: str
    name: str
    url: str
    subscriptions: list[Subscription]
    secrets: list[str]
    enabled: bool = True
    disabled_reason: str | None = None
    environment: str | None = None
    ordering: str = "entity"
    batch_size: int = 1
    rate_limit: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    failing_since: datetime | None = None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "organization": self.organization_id, "name": self.name, "url": self.url,
                "events": [subscription.text for subscription in self.subscriptions], "enabled": self.enabled,
                "disabled_reason": self.disabled_reason, "environment": self.environment,
                "ordering": self.ordering, "batch_size": self.batch_size, "rate_limit": self.rate_limit}


@dataclass(frozen=True)
class NewDelivery:
    integration_id: int
    organization_id: str
    event_id: str
    webhook_id: str
    entity_key: str
    entity_path: str
    operation: str
    body: bytes
    source_partition: int | None = None
    source_offset: int | None = None


@dataclass(frozen=True)
class Delivery:
    """A delivery ready to be attempted."""

    id: int
    integration_id: int
    webhook_id: str
    entity_path: str
    body: bytes
    attempts: int
    created_at: datetime
    # Earlier deliveries of the same entity to the same integration that were pending when this
    # one was recorded: it may only go after them.
    pending_before: tuple[int, ...] = ()
    trigger: str = "scheduled"  # scheduled (from the stream), manual (redeliver, recover) or replay


@dataclass(frozen=True)
class AttemptRecord:
    """The outcome of one attempt and what it does to its delivery."""

    delivery_id: int
    integration_id: int
    number: int
    trigger: str
    started_at: datetime
    url: str
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None
    duration_ms: float
    error: str | None
    status: str  # the delivery's status afterwards: pending, succeeded or failed
    next_attempt_at: datetime | None


class Store:
    """Access to walhook's tables. ``open`` migrates the schema; ``close`` is idempotent."""

    def __init__(self, dsn: str, schema: str = "walhook") -> None:
        self._dsn = dsn
        self.schema = schema
        self._s = f'"{schema}"'
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        if self._engine is not None:
            return
        # psycopg parses the DSN itself, so both URL and key=value forms work.
        self._engine = create_async_engine("postgresql+psycopg://", pool_size=10, pool_pre_ping=True,
                                           async_creator=lambda: psycopg.AsyncConnection.connect(self._dsn))
        try:
            await migrate(self._engine, self.schema)
        except SQLAlchemyError as exc:
            await self.close()
            raise StoreError(f"cannot prepare the store schema {self.schema!r}: {exc}") from exc

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open")
        return self._engine

    async def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(text(sql.replace("{s}", self._s)), params or {})
                return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) == "23505":  # unique violation
                detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or "duplicate"
                raise Conflict(f"already exists: {detail}") from exc
            raise StoreError(f"the store refused the change: {_first_line(exc.orig)}") from exc
        except SQLAlchemyError as exc:
            # The driver's message only: SQLAlchemy's would repeat the statement and its parameters.
            raise StoreError(f"store query failed: {_first_line(getattr(exc, 'orig', None) or exc)}") from exc

    async def _binary(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        """One statement of the hot path, in its own transaction, on the driver's connection: ``%b``
        parameters go in binary (arrays of bytes are not escaped value by value) and rows come back binary."""
        try:
            async with self.engine.begin() as conn:
                driver: psycopg.AsyncConnection[Any] = (await conn.get_raw_connection()).driver_connection  # type: ignore[assignment]
                async with driver.cursor(binary=True) as cursor:
                    await cursor.execute(sql.replace("{s}", self._s), params)
                    return await cursor.fetchall() if cursor.description else []
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise StoreError(f"{what}: {_first_line(getattr(exc, 'orig', None) or exc)}") from exc

    # Organizations and secrets

    async def add_organization(self, organization_id: str, secret: str | None = None) -> str:
        """Create an organization with a signing secret (generated unless given); returns the secret."""
        secret = secret or generate_secret()
        secret_key(secret)  # refuse a malformed secret before storing it
        await self._rows("INSERT INTO {s}.organizations (id) VALUES (:org)", {"org": organization_id})
        await self._rows("INSERT INTO {s}.signing_secrets (organization_id, secret) VALUES (:org, :secret)",
                         {"org": organization_id, "secret": secret})
        return secret

    async def organization_exists(self, organization_id: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM {s}.organizations WHERE id = :org", {"org": organization_id}))

    async def rotate_secret(self, organization_id: str, integration_id: int | None = None,
                            overlap: timedelta = DEFAULT_ROTATION_OVERLAP, secret: str | None = None) -> str:
        """A new secret for the organization (or one integration); the old ones keep signing for ``overlap``."""
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        secret = secret or generate_secret()
        secret_key(secret)
        owner = "integration_id = :integration" if integration_id else "integration_id IS NULL"
        await self._rows(f"UPDATE {{s}}.signing_secrets SET expires_at = now() + :overlap "
                         f"WHERE organization_id = :org AND {owner} AND (expires_at IS NULL OR expires_at > "
                         "now() + :overlap)", {"org": organization_id, "integration": integration_id,
                                               "overlap": overlap})
        await self._rows("INSERT INTO {s}.signing_secrets (organization_id, integration_id, secret) "
                         "VALUES (:org, :integration, :secret)",
                         {"org": organization_id, "integration": integration_id, "secret": secret})
        return secret

    async def _active_secrets(self, organization_ids: Sequence[str]) -> dict[tuple[str, int | None], list[str]]:
        rows = await self._rows(
            "SELECT organization_id, integration_id, secret FROM {s}.signing_secrets "
            "WHERE organization_id = ANY(:orgs) AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
            {"orgs": list(organization_ids)})
        secrets: dict[tuple[str, int | None], list[str]] = {}
        for row in rows:
            secrets.setdefault((row["organization_id"], row["integration_id"]), []).append(row["secret"])
        return secrets

    async def organizations(self) -> list[dict[str, Any]]:
        return await self._rows("SELECT id, created_at FROM {s}.organizations ORDER BY id")

    async def delete_organization(self, organization_id: str) -> None:
        """Delete an organization with its secrets, keys, integrations and their deliveries."""
        if not await self._rows("DELETE FROM {s}.organizations WHERE id = :org RETURNING id", {"org": organization_id}):
            raise NotFound(f"organization {organization_id!r} does not exist")

    # API keys: stored as a SHA-256 hash; the key itself is shown once, at creation.

    async def add_api_key(self, organization_id: str, name: str) -> tuple[dict[str, Any], str]:
        """A new key ``whk_<prefix>_<secret>``; returns its row and the key (never stored)."""
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        prefix, secret = token_hex(6), token_urlsafe(32)
        key = f"whk_{prefix}_{secret}"
        rows = await self._rows(
            "INSERT INTO {s}.api_keys (organization_id, name, prefix, key_hash) VALUES (:org, :name, :prefix, :hash) "
            "RETURNING id, organization_id, name, prefix, created_at, last_used_at, revoked_at",
            {"org": organization_id, "name": name, "prefix": prefix, "hash": key_hash(key)})
        return rows[0], key

    async def api_keys(self, organization_id: str) -> list[dict[str, Any]]:
        return await self._rows("SELECT id, organization_id, name, prefix, created_at, last_used_at, revoked_at "
                                "FROM {s}.api_keys WHERE organization_id = :org ORDER BY id", {"org": organization_id})

    async def revoke_api_key(self, organization_id: str, key_id: int) -> None:
        if not await self._rows("UPDATE {s}.api_keys SET revoked_at = coalesce(revoked_at, now()) "
                                "WHERE id = :id AND organization_id = :org RETURNING id",
                                {"id": key_id, "org": organization_id}):
            raise NotFound(f"API key {key_id} does not exist")

    async def organization_of_key(self, key: str) -> str | None:
        """The organization a presented key belongs to, or None (compared in constant time)."""
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != "whk":
            return None
        rows = await self._rows("UPDATE {s}.api_keys SET last_used_at = now() WHERE prefix = :prefix "
                                "AND revoked_at IS NULL RETURNING organization_id, key_hash", {"prefix": parts[1]})
        if rows and hmac.compare_digest(bytes(rows[0]["key_hash"]), key_hash(key)):
            return str(rows[0]["organization_id"])
        return None

    # Integrations

    async def add_integration(self, organization_id: str, url: str, events: list[str], name: str = "", *,
                              environment: str | None = None, ordering: str = "entity", batch_size: int = 1,
                              rate_limit: float | None = None, headers: dict[str, str] | None = None) -> int:
        for event_text in events:
            parse_subscription(event_text)  # refuse a bad subscription before storing it
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        rows = await self._rows(
            "INSERT INTO {s}.integrations (organization_id, name, url, events, environment, ordering, batch_size, "
            "rate_limit, headers) VALUES (:org, :name, :url, CAST(:events AS jsonb), :environment, :ordering, "
            ":batch_size, :rate_limit, CAST(:headers AS jsonb)) RETURNING id",
            {"org": organization_id, "name": name or url, "url": url, "events": _json(events),
             "environment": environment, "ordering": ordering, "batch_size": batch_size, "rate_limit": rate_limit,
             "headers": _json(headers or {})})
        return int(rows[0]["id"])

    async def integrations_of(self, organization_id: str | None = None, include_disabled: bool = False
                              ) -> list[Integration]:
        """Integrations (of one organization, or all), each with its active secrets."""
        where = ["TRUE"]
        if organization_id is not None:
            where.append("organization_id = :org")
        if not include_disabled:
            where.append("enabled")
        rows = await self._rows(f"SELECT * FROM {{s}}.integrations WHERE {' AND '.join(where)} ORDER BY id",
                                {"org": organization_id})
        return await self._with_secrets(rows)

    async def integration(self, integration_id: int) -> Integration:
        rows = await self._rows("SELECT * FROM {s}.integrations WHERE id = :id", {"id": integration_id})
        if not rows:
            raise NotFound(f"integration {integration_id} does not exist")
        return (await self._with_secrets(rows))[0]

    async def _with_secrets(self, rows: list[dict[str, Any]]) -> list[Integration]:
        secrets = await self._active_secrets(sorted({row["organization_id"] for row in rows}))
        return [Integration(
            id=row["id"], organization_id=row["organization_id"], name=row["name"], url=row["url"],
            subscriptions=[parse_subscription(t) for t in row["events"]],
            # An integration's own secrets override the organization's.
            secrets=secrets.get((row["organization_id"], row["id"])) or secrets.get((row["organization_id"], None), []),
            enabled=row["enabled"], disabled_reason=row["disabled_reason"], environment=row["environment"],
            ordering=row["ordering"], batch_size=row["batch_size"], rate_limit=row["rate_limit"],
            headers=row["headers"], failing_since=row["failing_since"]) for row in rows]

    async def integration_of(self, organization_id: str, integration_id: int) -> Integration:
        """An integration of this organization; another organization's is ``NotFound`` too."""
        rows = await self._rows("SELECT * FROM {s}.integrations WHERE id = :id AND organization_id = :org",
                                {"id": integration_id, "org": organization_id})
        if not rows:
            raise NotFound(f"integration {integration_id} does not exist")
        return (await self._with_secrets(rows))[0]

    async def update_integration(self, organization_id: str, integration_id: int, changes: dict[str, Any]) -> None:
        """Change the given fields (url, name, events, environment, ordering, batch_size, rate_limit, headers)."""
        allowed = {"url", "name", "events", "environment", "ordering", "batch_size", "rate_limit", "headers"}
        changes = {**changes, "headers": changes.get("headers") or {}} if "headers" in changes else changes
        fields = {k: (_json(v) if k in ("events", "headers") else v) for k, v in changes.items() if k in allowed}
        if "events" in changes:
            for event_text in changes["events"]:
                parse_subscription(event_text)
        if not fields:
            return
        assignments = ", ".join(f"{k} = CAST(:{k} AS jsonb)" if k in ("events", "headers") else f"{k} = :{k}"
                                for k in fields)
        if not await self._rows(f"UPDATE {{s}}.integrations SET {assignments}, updated_at = now() "
                                "WHERE id = :id AND organization_id = :org RETURNING id",
                                {**fields, "id": integration_id, "org": organization_id}):
            raise NotFound(f"integration {integration_id} does not exist")

    async def delete_integration(self, organization_id: str, integration_id: int) -> None:
        if not await self._rows("DELETE FROM {s}.integrations WHERE id = :id AND organization_id = :org RETURNING id",
                                {"id": integration_id, "org": organization_id}):
            raise NotFound(f"integration {integration_id} does not exist")

    async def set_enabled(self, integration_id: int, enabled: bool, reason: str | None = None) -> None:
        await self._rows("UPDATE {s}.integrations SET enabled = :enabled, disabled_reason = :reason, "
                         "failing_since = CASE WHEN :enabled THEN NULL ELSE failing_since END, updated_at = now() "
                         "WHERE id = :id", {"id": integration_id, "enabled": enabled,
                                            "reason": None if enabled else reason})

    async def note_health(self, integration_id: int, succeeded: bool, disable_after: timedelta) -> bool:
        """Track continuous failure; disables the integration past ``disable_after``. True if it did."""
        if succeeded:
            await self._rows("UPDATE {s}.integrations SET failing_since = NULL WHERE id = :id "
                             "AND failing_since IS NOT NULL", {"id": integration_id})
            return False
        rows = await self._rows(
            "UPDATE {s}.integrations SET failing_since = coalesce(failing_since, now()), "
            "enabled = CASE WHEN now() - coalesce(failing_since, now()) >= :limit THEN false ELSE enabled END, "
            "disabled_reason = CASE WHEN now() - coalesce(failing_since, now()) >= :limit "
            "THEN 'failing continuously since ' || coalesce(failing_since, now())::text ELSE disabled_reason END "
            "WHERE id = :id RETURNING enabled", {"id": integration_id, "limit": disable_after})
        return bool(rows) and not rows[0]["enabled"]

    # Deliveries

    async def create_deliveries(self, deliveries: Sequence[NewDelivery], claim_for: timedelta) -> list[Delivery]:
        """Record deliveries durably, claimed by the caller for ``claim_for``; already known ones are skipped.

        Each returned delivery names the earlier deliveries of the same entity to the same
        integration that were already pending (``pending_before``): it must wait for them.
        """
        if not deliveries:
            return []
        columns = [[getattr(d, name) for d in deliveries] for name in NewDelivery.__dataclass_fields__]
        # One statement, parameters as binary arrays (no per-value escaping); the bodies are not sent back.
        sql = ("WITH new AS (INSERT INTO {s}.deliveries (integration_id, organization_id, event_id, webhook_id, "
               "entity_key, entity_path, operation, body, source_partition, source_offset, claimed_until) "
               "SELECT *, now() + %b FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], "
               "%b::text[], %b::text[], %b::bytea[], %b::int[], %b::bigint[]) "
               "ON CONFLICT (integration_id, event_id) DO NOTHING "
               "RETURNING id, integration_id, event_id, entity_path, attempts, created_at, trigger) "
               "SELECT new.*, ARRAY(SELECT e.id FROM {s}.deliveries e WHERE e.integration_id = new.integration_id "
               "AND e.entity_path = new.entity_path AND e.status = 'pending') AS pending_before "
               "FROM new ORDER BY new.id")
        rows = await self._binary(sql, [claim_for, *columns], "cannot record deliveries")
        by_key = {(d.integration_id, d.event_id): d for d in deliveries}
        return [Delivery(id, integration_id, by_key[(integration_id, event_id)].webhook_id, entity_path,
                         by_key[(integration_id, event_id)].body, attempts, created_at, tuple(pending_before or ()),
                         trigger)
                for id, integration_id, event_id, entity_path, attempts, created_at, trigger, pending_before in rows]

    async def claim_due(self, limit: int, claim_for: timedelta) -> list[Delivery]:
        """Pending deliveries whose time has come and that no earlier delivery of the same entity blocks.

        Claimed with SKIP LOCKED, so several publishers share the work without doing it twice.
        """
        return [Delivery(**row) for row in await self._rows(
            "UPDATE {s}.deliveries d SET claimed_until = now() + :claim FROM ("
            " SELECT c.id FROM {s}.deliveries c JOIN {s}.integrations i ON i.id = c.integration_id"
            " WHERE c.status = 'pending' AND c.next_attempt_at <= now() AND i.enabled"
            " AND (c.claimed_until IS NULL OR c.claimed_until < now())"
            " AND (i.ordering = 'none' OR NOT EXISTS (SELECT 1 FROM {s}.deliveries e"
            "   WHERE e.integration_id = c.integration_id AND e.entity_path = c.entity_path"
            "   AND e.status = 'pending' AND e.id < c.id))"
            " ORDER BY c.next_attempt_at, c.id LIMIT :limit FOR UPDATE OF c SKIP LOCKED) due "
            "WHERE d.id = due.id RETURNING d.id, d.integration_id, d.webhook_id, d.entity_path, d.body, "
            "d.attempts, d.created_at, d.trigger", {"limit": limit, "claim": claim_for})]

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Log attempts and move their deliveries on, in one statement."""
        if not records:
            return
        latest = list({r.delivery_id: r for r in records}.values())  # a delivery's last attempt decides its state
        attempts = [[r.delivery_id for r in records], [r.integration_id for r in records],
                    [r.number for r in records], [r.trigger for r in records], [r.started_at for r in records],
                    [r.url for r in records], [_json(r.request_headers) for r in records],
                    [r.response_status for r in records],
                    [None if r.response_headers is None else _json(r.response_headers) for r in records],
                    [r.response_body for r in records], [r.duration_ms for r in records], [r.error for r in records]]
        moves = [[r.delivery_id for r in latest], [r.status for r in latest], [r.number for r in latest],
                 [r.next_attempt_at for r in latest], [r.error for r in latest]]
        sql = ("WITH logged AS (INSERT INTO {s}.attempts (delivery_id, integration_id, number, trigger, started_at, "
               "url, request_headers, response_status, response_headers, response_body, duration_ms, error) "
               "SELECT a.delivery_id, a.integration_id, a.number, a.trigger, a.started_at, a.url, "
               "a.request_headers::jsonb, a.response_status, a.response_headers::jsonb, a.response_body, "
               "a.duration_ms, a.error FROM unnest(%b::bigint[], %b::bigint[], %b::int[], %b::text[], "
               "%b::timestamptz[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bytea[], %b::float8[], "
               "%b::text[]) AS a(delivery_id, integration_id, number, trigger, started_at, url, request_headers, "
               "response_status, response_headers, response_body, duration_ms, error)) "
               "UPDATE {s}.deliveries d SET status = m.status, attempts = greatest(d.attempts, m.number), "
               "next_attempt_at = coalesce(m.next_attempt_at, d.next_attempt_at), claimed_until = NULL, "
               "last_error = m.error, updated_at = now() FROM unnest(%b::bigint[], %b::text[], %b::int[], "
               "%b::timestamptz[], %b::text[]) AS m(id, status, number, next_attempt_at, error) WHERE d.id = m.id")
        await self._binary(sql, [*attempts, *moves], "cannot record attempts")

    async def redeliver(self, delivery_id: int, organization_id: str | None = None) -> dict[str, Any]:
        """Schedule one more attempt of a delivery now (trigger ``manual``); returns the delivery."""
        rows = await self._rows(
            "UPDATE {s}.deliveries SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, "
            "trigger = 'manual', updated_at = now() WHERE id = :id "
            "AND (CAST(:org AS text) IS NULL OR organization_id = :org) "
            "RETURNING id, integration_id, event_id, webhook_id, status", {"id": delivery_id, "org": organization_id})
        if not rows:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return rows[0]

    async def recover(self, integration_id: int, since: datetime) -> list[dict[str, Any]]:
        """Schedule every delivery of the integration that failed since ``since`` for one more attempt."""
        return await self._rows(
            "UPDATE {s}.deliveries SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, "
            "trigger = 'manual', updated_at = now() WHERE integration_id = :integration AND status = 'failed' "
            "AND updated_at >= :since RETURNING id, event_id, webhook_id",
            {"integration": integration_id, "since": since})

    async def schedule_replay(self, deliveries: Sequence[NewDelivery]) -> list[dict[str, Any]]:
        """Deliver these again (trigger ``replay``), whether or not they were delivered before."""
        if not deliveries:
            return []
        columns = {name: [getattr(d, name) for d in deliveries] for name in NewDelivery.__dataclass_fields__}
        return await self._rows(
            "INSERT INTO {s}.deliveries (integration_id, organization_id, event_id, webhook_id, entity_key, "
            "entity_path, operation, body, source_partition, source_offset, trigger) "
            "SELECT *, 'replay' FROM unnest(CAST(:integration_id AS bigint[]), CAST(:organization_id AS text[]), "
            "CAST(:event_id AS text[]), CAST(:webhook_id AS text[]), CAST(:entity_key AS text[]), "
            "CAST(:entity_path AS text[]), CAST(:operation AS text[]), CAST(:body AS bytea[]), "
            "CAST(:source_partition AS int[]), CAST(:source_offset AS bigint[])) "
            "ON CONFLICT (integration_id, event_id) DO UPDATE SET status = 'pending', next_attempt_at = now(), "
            "claimed_until = NULL, trigger = 'replay', updated_at = now() RETURNING id, event_id, webhook_id",
            columns)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give up claims (on shutdown) so another publisher may take the deliveries at once."""
        if delivery_ids:
            await self._rows("UPDATE {s}.deliveries SET claimed_until = NULL WHERE id = ANY(:ids) "
                             "AND status = 'pending'", {"ids": list(delivery_ids)})

    async def deliveries(self, integration_id: int | None = None, status: str | None = None, limit: int = 100, *,
                         organization_id: str | None = None, entity_key: str | None = None,
                         event_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
                         before_id: int | None = None) -> list[dict[str, Any]]:
        """Deliveries newest first, filtered; ``before_id`` is the cursor for the next page."""
        filters = {"integration_id": integration_id, "status": status, "organization_id": organization_id,
                   "entity_key": entity_key, "event_id": event_id}
        where = [f"{name} = :{name}" for name, value in filters.items() if value is not None]
        where += [clause for clause, value in (("created_at >= :since", since), ("created_at < :until", until),
                                               ("id < :before_id", before_id)) if value is not None]
        return await self._rows(
            "SELECT id, integration_id, organization_id, event_id, webhook_id, entity_key, entity_path, operation, "
            "status, attempts, next_attempt_at, last_error, trigger, created_at, updated_at FROM {s}.deliveries "
            f"WHERE {' AND '.join(where) or 'TRUE'} ORDER BY id DESC LIMIT :limit",
            {**filters, "since": since, "until": until, "before_id": before_id, "limit": limit})

    async def delivery_of(self, organization_id: str, delivery_id: int) -> dict[str, Any]:
        rows = await self.deliveries(organization_id=organization_id, limit=1, before_id=delivery_id + 1)
        if not rows or rows[0]["id"] != delivery_id:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return rows[0]

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""
        await self._rows("SELECT 1")

    async def delivery_body(self, delivery_id: int) -> bytes:
        rows = await self._rows("SELECT body FROM {s}.deliveries WHERE id = :id", {"id": delivery_id})
        if not rows:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return bytes(rows[0]["body"])

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries by status."""
        rows = await self._rows("SELECT status, count(*) AS n FROM {s}.deliveries GROUP BY status")
        return {row["status"]: int(row["n"]) for row in rows}

    async def failure_streaks(self) -> dict[int, float]:
        """Seconds each failing integration has been failing without a success."""
        rows = await self._rows("SELECT id, extract(epoch FROM now() - failing_since) AS s FROM {s}.integrations "
                                "WHERE failing_since IS NOT NULL")
        return {int(row["id"]): float(row["s"]) for row in rows}

    async def attempt_durations(self, bounds_ms: Sequence[int], window: timedelta) -> tuple[list[int], int, float]:
        """Attempts of the last ``window``: how many took at most each bound (ms), the count, the sum (ms)."""
        columns = ", ".join(f"count(*) FILTER (WHERE duration_ms <= {int(b)}) AS le_{int(b)}" for b in bounds_ms)
        (row,) = await self._rows(f"SELECT {columns}, count(*) AS total, coalesce(sum(duration_ms), 0) AS sum "
                                  "FROM {s}.attempts WHERE started_at > now() - :window", {"window": window})
        return [int(row[f"le_{int(b)}"]) for b in bounds_ms], int(row["total"]), float(row["sum"])

    async def attempts_of(self, delivery_id: int) -> list[dict[str, Any]]:
        return await self._rows("SELECT * FROM {s}.attempts WHERE delivery_id = :id ORDER BY id", {"id": delivery_id})


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def key_hash(key: str) -> bytes:
    """API keys are long random strings, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).digest()


def _json(value: Any) -> str:
    import orjson
    return orjson.dumps(value).decode()


def utcnow() -> datetime:
    return datetime.now(UTC)
