"""What an organization's manual actions cost: their rate, and the delivery log they have written lately.

Redeliver, recover and replay each write the delivery log (a delivery's body, every attempt's headers
and response) in the store all organizations share. Each such action is noted in
``organization_actions`` (kept for an hour); the log's size is measured from the rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.operational import OPERATIONAL_KEY
from publisher.store.reports import ReportStore


def _attempt_bytes(columns: str) -> str:
    """What one attempt adds to the log: its request and response headers and the kept response body.
    ``columns``: where the attempt's columns are, ``a.`` in the attempts log, ``first_`` in its delivery's row."""
    return (f"coalesce(octet_length({columns}request_headers::text), 0) "
            f"+ coalesce(octet_length({columns}response_headers::text), 0) "
            f"+ coalesce(octet_length({columns}response_body), 0)")


_ATTEMPT_BYTES = _attempt_bytes("a.")
# What a delivery's row adds: its body, and its first attempt when that is kept in the row (migration 85).
_DELIVERY_BYTES = "octet_length(body) + " + _attempt_bytes("first_")

# Operational events are walhook's own, not the organization's data: they count toward no quota.
_LOG_BYTES = f"""
SELECT
  (SELECT coalesce(sum({_DELIVERY_BYTES}), 0) FROM {{s}}.deliveries
   WHERE organization_id = :org AND created_at > now() - interval '24 hours' AND entity_key <> '{OPERATIONAL_KEY}')
+ (SELECT coalesce(sum({_ATTEMPT_BYTES}), 0)
   FROM {{s}}.attempts a WHERE a.started_at > now() - interval '24 hours'
   AND a.integration_id IN (SELECT id FROM {{s}}.integrations WHERE organization_id = :org)
   AND NOT EXISTS (SELECT 1 FROM {{s}}.deliveries d WHERE d.id = a.delivery_id
                   AND d.entity_key = '{OPERATIONAL_KEY}')) AS bytes,
  (SELECT count(*) FROM {{s}}.organization_actions WHERE organization_id = :org
   AND at > now() - interval '1 minute') AS actions
"""


@dataclass(frozen=True)
class Usage:
    """An organization's manual actions in the last minute, and the log it wrote in the last 24 hours."""

    actions_last_minute: int
    log_bytes_24h: int


class UsageStore(ReportStore):
    """Counting manual actions and the log's size per organization."""

    async def usage(self, organization_id: str) -> Usage:
        row = (await self._rows(_LOG_BYTES, {"org": organization_id}))[0]
        return Usage(int(row["actions"]), int(row["bytes"]))

    async def take_action(self, organization_id: str, kind: str, per_minute: int) -> float:
        """Note one manual action if fewer than ``per_minute`` were taken in the last minute; otherwise
        nothing is noted and the answer is the seconds until one may be (0.0: taken)."""
        rows = await self._rows(
            "WITH pruned AS (DELETE FROM {s}.organization_actions WHERE organization_id = :org "
            "AND at < now() - interval '1 hour'), "
            "recent AS (SELECT count(*) AS n, min(at) AS oldest FROM {s}.organization_actions "
            "WHERE organization_id = :org AND at > now() - interval '1 minute'), "
            "taken AS (INSERT INTO {s}.organization_actions (organization_id, kind) SELECT :org, :kind FROM recent "
            "WHERE n < :limit RETURNING id) "
            "SELECT (SELECT count(*) FROM taken) AS taken, "
            "extract(epoch FROM (SELECT oldest FROM recent) + interval '1 minute' - now()) AS wait",
            {"org": organization_id, "kind": kind, "limit": per_minute})
        return 0.0 if rows[0]["taken"] else max(0.1, float(rows[0]["wait"] or 1.0))

    async def busiest_organizations(self, limit: int = 5) -> list[dict[str, object]]:
        """The organizations whose deliveries wrote the most log in the last 24 hours (bodies of new
        deliveries, attempts), with their manual actions in the last minute: for the operator's status."""
        return await self._rows(
            f"WITH logged AS (SELECT organization_id, sum({_DELIVERY_BYTES}) AS bytes FROM {{s}}.deliveries "
            "WHERE created_at > now() - interval '24 hours' GROUP BY 1 UNION ALL "
            f"SELECT i.organization_id, sum({_ATTEMPT_BYTES}) "
            "FROM {s}.attempts a JOIN {s}.integrations i ON i.id = a.integration_id "
            "WHERE a.started_at > now() - interval '24 hours' GROUP BY 1), "
            "acted AS (SELECT organization_id, count(*) AS actions FROM {s}.organization_actions "
            "WHERE at > now() - interval '1 minute' GROUP BY 1) "
            "SELECT coalesce(l.organization_id, a.organization_id) AS organization_id, "
            "coalesce(sum(l.bytes), 0)::bigint AS log_bytes_24h, coalesce(max(a.actions), 0) AS actions_last_minute "
            "FROM logged l FULL JOIN acted a USING (organization_id) GROUP BY 1 ORDER BY 2 DESC LIMIT :limit",
            {"limit": limit})
