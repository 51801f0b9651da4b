"""Delivery statistics of one organization: per integration over the last 24 hours, and per hour.

Both read the deliveries table through indexed ranges of the last day (``created_at``) and the
attempts of the organization's integrations; neither loads a whole table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from publisher.store import Store


@dataclass(frozen=True)
class IntegrationStats:
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    last_attempt_at: datetime | None = None
    last_status: int | None = None


@dataclass(frozen=True)
class Hour:
    start: datetime
    counts: dict[str, int] = field(default_factory=dict)


async def integration_stats(store: Store, organization_id: str) -> dict[int, IntegrationStats]:
    """Deliveries of the last 24 h by status, and the last attempt, for each integration of the organization."""
    rows = await store._rows(
        "SELECT i.id, "
        " (SELECT count(*) FROM {s}.deliveries d WHERE d.integration_id = i.id AND d.status = 'succeeded'"
        "   AND d.created_at > now() - interval '24 hours') AS succeeded,"
        " (SELECT count(*) FROM {s}.deliveries d WHERE d.integration_id = i.id AND d.status = 'failed'"
        "   AND d.created_at > now() - interval '24 hours') AS failed,"
        " (SELECT count(*) FROM {s}.deliveries d WHERE d.integration_id = i.id AND d.status = 'pending') AS pending,"
        " a.started_at, a.response_status "
        "FROM {s}.integrations i LEFT JOIN LATERAL (SELECT started_at, response_status FROM {s}.attempts "
        " WHERE integration_id = i.id ORDER BY id DESC LIMIT 1) a ON true WHERE i.organization_id = :org",
        {"org": organization_id})
    return {int(r["id"]): IntegrationStats(int(r["succeeded"]), int(r["failed"]), int(r["pending"]),
                                           r["started_at"], r["response_status"]) for r in rows}


async def hourly(store: Store, organization_id: str, hours: int = 24) -> list[Hour]:
    """Deliveries created in each of the last ``hours`` hours, by their status now (oldest hour first)."""
    rows = await store._rows(
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
    return [Hour(start, counts) for start, counts in by_hour.items()]


async def backlog(store: Store, organization_id: str) -> int:
    """Deliveries of the organization waiting for an attempt (first or retry)."""
    rows = await store._rows("SELECT count(*) AS n FROM {s}.deliveries WHERE organization_id = :org "
                             "AND status = 'pending'", {"org": organization_id})
    return int(rows[0]["n"])
