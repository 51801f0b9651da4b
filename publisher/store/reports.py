"""Reading the log of webhook jobs, and the figures the metrics and status report.

Attempts are read from ``attempt_log`` (migration 85): the attempts log together with the first attempts kept in
their live deliveries' own rows (``publisher.store.deliveries``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from models.errors import NotFound
from publisher.store.backfills import BackfillStore
from publisher.store.rows import Attempt, DeliveryRow, HourCounts, IntegrationFigures

_ROW = ("id, integration_id, organization_id, event_id, webhook_id, entity_key, entity_path, operation, status, "
        "attempts, next_attempt_at, last_error, trigger, created_at, updated_at")

_ATTEMPT = ("id, delivery_id, integration_id, number, trigger, started_at, url, request_headers, response_status, "
            "response_headers, response_body, duration_ms, error")

# An integration's latest attempt: the newest of the attempts log's and of its newest delivery with a first
# attempt inside (each read backwards through its own index, not through the union).
_LAST_ATTEMPT = (
    "SELECT started_at, response_status FROM ("
    "(SELECT started_at, response_status FROM {s}.attempts WHERE integration_id = i.id ORDER BY id DESC LIMIT 1) "
    "UNION ALL (SELECT first_started_at, first_response_status FROM {s}.deliveries WHERE integration_id = i.id "
    "AND first_attempt_id IS NOT NULL ORDER BY id DESC LIMIT 1)) latest ORDER BY started_at DESC LIMIT 1")

# The organization's settled deliveries of the last 24 hours, counted by integration: one range of the index
# of the organization's deliveries by time (a delivery's organization is its integration's). There is no such
# index per integration (migration 87): each index is one more write for every delivery logged.
_DAY_BY_INTEGRATION = (
    "SELECT integration_id, count(*) FILTER (WHERE status = 'succeeded') AS succeeded, "
    "count(*) FILTER (WHERE status = 'failed') AS failed FROM {s}.deliveries "
    "WHERE organization_id = :org AND created_at > now() - interval '24 hours' GROUP BY integration_id")


FAILED_COUNTED_UP_TO = 100_000
"""Failed deliveries are counted one by one up to this many (a bounded range of ``deliveries_failed``); beyond
it the figure is the statistics' estimate: failed deliveries are kept ``[retention] failed_days``, so their
number grows with the log, not with what is waiting."""

# A relation's rows now as the planner estimates them: the density of its last VACUUM or ANALYZE times its
# current size in pages, so the figure follows the log's growth between two runs of autovacuum (0 before the
# first). Reads the catalog and the file's size, never the relation.
_ESTIMATE = ("(SELECT CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / "
             "current_setting('block_size')::float8) ELSE greatest(c.reltuples, 0) END FROM pg_class c "
             "WHERE c.oid = to_regclass(format('%I.{relation}', CAST(:schema AS text))))")

# What a metrics scrape reads of the deliveries: the pending ones (partial indexes WHERE status = 'pending'), at
# most ``failed_up_to`` failed ones (deliveries_failed), and the statistics of the table and of that index.
_COUNTS = ("SELECT (SELECT count(*) FROM {s}.deliveries WHERE status = 'pending') AS pending, "
           "(SELECT count(*) FROM (SELECT FROM {s}.deliveries WHERE status = 'failed' LIMIT :failed_up_to) f) "
           f"AS failed, {_ESTIMATE.format(relation='deliveries_failed')} AS failed_estimate, "
           f"{_ESTIMATE.format(relation='deliveries')} AS rows_estimate")

# The newest attempts of the window, at most :latest: each half of the log (the attempts log, the first attempts
# kept in live deliveries' rows) read backwards through its index on the start time and cut to :latest before
# the union, so a scrape reads at most twice :latest index entries whatever the hour held.
_LATEST_ATTEMPTS = (
    "SELECT duration_ms FROM ("
    "(SELECT started_at, duration_ms FROM {s}.attempts WHERE started_at > now() - :window "
    "ORDER BY started_at DESC LIMIT :latest) UNION ALL "
    "(SELECT first_started_at, first_duration_ms FROM {s}.deliveries WHERE first_attempt_id IS NOT NULL "
    "AND first_started_at > now() - :window ORDER BY first_started_at DESC LIMIT :latest)"
    ") both_halves ORDER BY started_at DESC LIMIT :latest")


class ReportStore(BackfillStore):
    """The delivery log and its figures."""

    async def deliveries(self, integration_id: int | None = None, status: str | None = None, limit: int = 100, *,
                         organization_id: str | None = None, entity_key: str | None = None,
                         event_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
                         before_id: int | None = None, operation: str | None = None,
                         entity_path: str | None = None) -> list[DeliveryRow]:
        """Deliveries newest first, filtered; ``before_id`` is the cursor for the next page."""
        filters = {"integration_id": integration_id, "status": status, "organization_id": organization_id,
                   "entity_key": entity_key, "event_id": event_id, "operation": operation, "entity_path": entity_path}
        where = [f"{name} = :{name}" for name, value in filters.items() if value is not None]
        where += [clause for clause, value in (("created_at >= :since", since), ("created_at < :until", until),
                                               ("id < :before_id", before_id)) if value is not None]
        return [DeliveryRow(**row) for row in await self._rows(
            f"SELECT {_ROW} FROM {{s}}.deliveries WHERE {' AND '.join(where) or 'TRUE'} ORDER BY id DESC LIMIT :limit",
            {**filters, "since": since, "until": until, "before_id": before_id, "limit": limit})]

    async def delivery_of(self, organization_id: str | None, delivery_id: int) -> DeliveryRow:
        """A delivery of this organization (any, for the operator's None); another organization's is
        ``NotFound`` too."""
        rows = await self.deliveries(organization_id=organization_id, limit=1, before_id=delivery_id + 1)
        if not rows or rows[0].id != delivery_id:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return rows[0]

    async def delivery_body(self, delivery_id: int) -> bytes:
        rows = await self._rows("SELECT body FROM {s}.deliveries WHERE id = :id", {"id": delivery_id})
        if not rows:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return bytes(rows[0]["body"])

    async def attempts_of(self, delivery_id: int) -> list[Attempt]:
        rows = await self._rows(f"SELECT {_ATTEMPT} FROM {{s}}.attempt_log WHERE delivery_id = :id ORDER BY number, id",
                                {"id": delivery_id})
        return [Attempt(**{**row, "response_body": None if row["response_body"] is None
                           else bytes(row["response_body"])}) for row in rows]

    async def pending_among(self, delivery_ids: Sequence[int]) -> int:
        """How many of these deliveries are still pending."""
        (row,) = await self._rows("SELECT count(*) AS n FROM {s}.deliveries WHERE id = ANY(:ids) "
                                  "AND status = 'pending'", {"ids": list(delivery_ids)})
        return int(row["n"])

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries by status, at a cost that does not grow with the log: ``pending`` counted exactly (the
        backlog's own indexes), ``failed`` exactly up to ``FAILED_COUNTED_UP_TO`` and estimated beyond, and
        ``succeeded`` estimated from the statistics (the table's rows less the other two, never below 0)."""
        (row,) = await self._rows(_COUNTS, {"schema": self.schema, "failed_up_to": FAILED_COUNTED_UP_TO})
        pending = int(row["pending"])
        failed = int(row["failed"])
        if failed >= FAILED_COUNTED_UP_TO:
            failed = max(failed, round(row["failed_estimate"]))
        return {"pending": pending, "failed": failed,
                "succeeded": max(0, round(row["rows_estimate"]) - pending - failed)}

    async def integration_health(self, organization_id: str | None = None) -> list[dict[str, Any]]:
        """Per integration (of one organization, or all): enabled, pending deliveries, failing since, the next
        retry's time, and the events its conditions filtered out."""
        return await self._rows(
            "SELECT i.id, i.organization_id, i.enabled, i.disabled_reason, i.failing_since, "
            "coalesce(p.pending, 0) AS pending, p.next_retry, coalesce(f.events, 0) AS filtered "
            "FROM {s}.integrations i LEFT JOIN ("
            "SELECT integration_id, count(*) AS pending, min(next_attempt_at) FILTER (WHERE attempts > 0) "
            "AS next_retry FROM {s}.deliveries WHERE status = 'pending' GROUP BY integration_id) p "
            "ON p.integration_id = i.id LEFT JOIN {s}.filtered_events f ON f.integration_id = i.id "
            "WHERE CAST(:org AS text) IS NULL OR i.organization_id = :org ORDER BY i.id", {"org": organization_id})

    async def failure_streaks(self) -> dict[int, float]:
        """Seconds each failing integration has been failing without a success."""
        rows = await self._rows("SELECT id, extract(epoch FROM now() - failing_since) AS s FROM {s}.integrations "
                                "WHERE failing_since IS NOT NULL")
        return {int(row["id"]): float(row["s"]) for row in rows}

    async def filtered_counts(self, organization_id: str | None = None) -> dict[int, int]:
        """Events each integration's conditions filtered out (no delivery), by integration id."""
        rows = await self._rows(
            "SELECT f.integration_id, f.events FROM {s}.filtered_events f JOIN {s}.integrations i "
            "ON i.id = f.integration_id WHERE CAST(:org AS text) IS NULL OR i.organization_id = :org "
            "ORDER BY f.integration_id", {"org": organization_id})
        return {int(row["integration_id"]): int(row["events"]) for row in rows}

    async def attempt_durations(self, bounds_ms: Sequence[int], window: timedelta, latest: int
                                ) -> tuple[list[int], int, float]:
        """The ``latest`` attempts of the last ``window`` (fewer if the window has fewer): how many took at most
        each bound (ms), the count, the sum (ms)."""
        columns = ", ".join(f"count(*) FILTER (WHERE duration_ms <= {int(b)}) AS le_{int(b)}" for b in bounds_ms)
        (row,) = await self._rows(f"SELECT {columns}, count(*) AS total, coalesce(sum(duration_ms), 0) AS sum "
                                  f"FROM ({_LATEST_ATTEMPTS}) latest", {"window": window, "latest": latest})
        return [int(row[f"le_{int(b)}"]) for b in bounds_ms], int(row["total"]), float(row["sum"])

    async def integration_figures(self, organization_id: str) -> dict[int, IntegrationFigures]:
        """Per integration of the organization: deliveries of the last 24 h by status, the backlog, the last attempt."""
        rows = await self._rows(
            "SELECT i.id, coalesce(d.succeeded, 0) AS succeeded, coalesce(d.failed, 0) AS failed, p.pending, "
            f"a.started_at, a.response_status FROM {{s}}.integrations i LEFT JOIN ({_DAY_BY_INTEGRATION}) d "
            "ON d.integration_id = i.id LEFT JOIN LATERAL (SELECT count(*) AS pending FROM {s}.deliveries "
            "WHERE integration_id = i.id AND status = 'pending') p ON true "
            f"LEFT JOIN LATERAL ({_LAST_ATTEMPT}) a ON true WHERE i.organization_id = :org", {"org": organization_id})
        return {int(r["id"]): IntegrationFigures(int(r["succeeded"]), int(r["failed"]), int(r["pending"]),
                                                 r["started_at"], r["response_status"]) for r in rows}

    async def hourly_deliveries(self, organization_id: str, hours: int = 24) -> list[HourCounts]:
        """Deliveries recorded in each of the last ``hours`` hours, by their status now (oldest hour first)."""
        rows = await self._rows(
            "SELECT h.start, d.status, count(d.id) AS n FROM generate_series(date_trunc('hour', now()) - "
            "make_interval(hours => :hours - 1), date_trunc('hour', now()), interval '1 hour') AS h(start) "
            "LEFT JOIN {s}.deliveries d ON d.organization_id = :org AND d.created_at >= h.start "
            "AND d.created_at < h.start + interval '1 hour' GROUP BY h.start, d.status ORDER BY h.start",
            {"org": organization_id, "hours": hours})
        by_hour: dict[datetime, dict[str, int]] = {}
        for row in rows:
            counts = by_hour.setdefault(row["start"], {})
            if row["status"] is not None:
                counts[row["status"]] = int(row["n"])
        return [HourCounts(start, counts) for start, counts in by_hour.items()]

    async def backlog_of(self, organization_id: str) -> int:
        """Deliveries of the organization waiting for an attempt (first or retry)."""
        rows = await self._rows("SELECT count(*) AS n FROM {s}.deliveries WHERE organization_id = :org "
                                "AND status = 'pending'", {"org": organization_id})
        return int(rows[0]["n"])
