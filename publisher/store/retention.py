"""The delivery log's retention: day partitions of the attempts log, pruning, and the log's size.

The attempts log (request and response headers, up to 16 KB of response body per attempt) is
partitioned by outcome and then by day of ``started_at`` (migration 60). Pruning drops a whole
day partition once its newest possible row is older than the retention of its outcome, so
the bulk of the bytes goes without a row-by-row DELETE or the vacuum debt that follows it.

Deliveries stay one plain table: its ``UNIQUE (integration_id, event_id)`` is what makes a
re-read of Kafka idempotent, and Postgres would require the partition key in that key. Settled
deliveries (succeeded, or failed for good) older than their retention are deleted in batches
through the ``deliveries_settled`` index; pending ones are never touched, so the ordering rule
and the retry poller see exactly what they saw before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.exc import SQLAlchemyError

from models.errors import StoreError
from publisher.store.engine import first_line
from publisher.store.reports import ReportStore

OUTCOMES = ("succeeded", "failed")
DAYS_AHEAD = 2
"""Partitions are created this many days ahead, so that rows never wait for one."""

_PARTITION = re.compile(r"^attempts_(succeeded|failed)_(\d{8})$")


@dataclass(frozen=True)
class Pruned:
    """What one pruning round removed."""

    partitions_dropped: tuple[str, ...]
    attempts_deleted: int
    deliveries_deleted: int


@dataclass(frozen=True)
class LogSize:
    """The delivery log's size on disk (tables, their TOAST and indexes) and its rows (the statistics'
    live-row counts: current within seconds, without counting a large table)."""

    deliveries_bytes: int
    attempts_bytes: int
    deliveries_rows: int
    attempts_rows: int
    attempt_partitions: int

    @property
    def total_bytes(self) -> int:
        return self.deliveries_bytes + self.attempts_bytes


def partition_name(outcome: str, day: date) -> str:
    return f"attempts_{outcome}_{day:%Y%m%d}"


def expired_days(partitions: Iterable[str], now: datetime, keep: dict[str, timedelta]) -> list[str]:
    """The day partitions whose every row is older than its outcome's retention (pure)."""
    expired = []
    for name in partitions:
        match = _PARTITION.match(name)
        if match:
            outcome, day = match.group(1), datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC)
            if day + timedelta(days=1) <= now - keep[outcome]:
                expired.append(name)
    return sorted(expired)


def _day_start(day: date) -> str:
    return f"{day:%Y-%m-%d} 00:00:00+00"


class RetentionStore(ReportStore):
    """Partitions ahead, pruning behind, and the size in between."""

    async def attempt_partitions(self) -> list[str]:
        rows = await self._rows("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                                "WHERE n.nspname = :schema AND p.relname IN ('attempts_succeeded', 'attempts_failed')",
                                {"schema": self.schema})
        return sorted(row["relname"] for row in rows if _PARTITION.match(row["relname"]))

    async def ensure_partitions(self, days: Iterable[date] | None = None) -> list[str]:
        """Create the day partitions of ``days`` (default: today and ``DAYS_AHEAD`` more); returns the new ones.

        Rows of such a day that already sit in the default partition move into the new one, so
        creating a partition late never fails on them.
        """
        today = datetime.now(UTC).date()
        wanted = list(days) if days is not None else [today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
        existing = set(await self.attempt_partitions())
        created = []
        for outcome in OUTCOMES:
            for day in wanted:
                name = partition_name(outcome, day)
                if name not in existing and await self._create_partition(outcome, day, name):
                    created.append(name)
        return created

    async def _create_partition(self, outcome: str, day: date, name: str) -> bool:
        """True if created here; False if another publisher created it meanwhile."""
        start, end = _day_start(day), _day_start(day + timedelta(days=1))
        # One transaction: build the table, move the day's rows out of the default, attach it.
        try:
            await self._create(outcome, name, start, end)
        except StoreError:
            if name in await self.attempt_partitions():
                return False
            raise
        return True

    async def _create(self, outcome: str, name: str, start: str, end: str) -> None:
        parent, default = f"{{s}}.attempts_{outcome}", f"{{s}}.attempts_{outcome}_default"
        await self._script([
            "SET LOCAL lock_timeout = '5s'",
            f"CREATE TABLE {{s}}.{name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
            f"WITH moved AS (DELETE FROM {default} WHERE started_at >= '{start}' AND started_at < '{end}' "
            f"RETURNING *) INSERT INTO {{s}}.{name} SELECT * FROM moved",
            f"ALTER TABLE {parent} ATTACH PARTITION {{s}}.{name} FOR VALUES FROM ('{start}') TO ('{end}')"],
            f"cannot create attempts partition {name}")

    async def _script(self, statements: list[str], what: str) -> None:
        """Statements without parameters, in one transaction, on the driver's connection (DDL: SQLAlchemy's
        ``text`` would read the ``:00`` of a time literal as a parameter)."""
        try:
            async with self.engine.begin() as conn:
                driver: psycopg.AsyncConnection[Any] = (await conn.get_raw_connection()).driver_connection  # type: ignore[assignment]
                for statement in statements:
                    await driver.execute(statement.replace("{s}", self._s))
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise StoreError(f"{what}: {first_line(getattr(exc, 'orig', None) or exc)}") from exc

    async def prune(self, keep_succeeded: timedelta, keep_failed: timedelta, batch: int = 5000,
                    now: datetime | None = None) -> Pruned:
        """Drop expired attempt partitions, delete expired rows of the defaults, delete settled deliveries."""
        now = now or datetime.now(UTC)
        keep = {"succeeded": keep_succeeded, "failed": keep_failed}
        dropped = expired_days(await self.attempt_partitions(), now, keep)
        for name in dropped:
            await self._script(["SET LOCAL lock_timeout = '5s'", f"DROP TABLE {{s}}.{name}"],
                               f"cannot drop attempts partition {name}")
        attempts = 0
        for outcome in OUTCOMES:
            attempts += len(await self._rows(
                f"DELETE FROM {{s}}.attempts_{outcome}_default WHERE started_at < :before RETURNING 1",
                {"before": now - keep[outcome]}))
        deliveries = 0
        for status in OUTCOMES:
            deliveries += await self._delete_settled(status, now - keep[status], batch)
        return Pruned(tuple(dropped), attempts, deliveries)

    async def _delete_settled(self, status: str, before: datetime, batch: int) -> int:
        """Delete ``status`` deliveries settled before ``before``, ``batch`` per statement (short locks)."""
        deleted = 0
        while True:
            rows = await self._rows(
                "DELETE FROM {s}.deliveries WHERE id IN (SELECT id FROM {s}.deliveries WHERE status = :status "
                "AND updated_at < :before ORDER BY updated_at LIMIT :batch) RETURNING 1",
                {"status": status, "before": before, "batch": batch})
            deleted += len(rows)
            if len(rows) < batch:
                return deleted

    async def log_size(self) -> LogSize:
        """Bytes and estimated rows of the deliveries table and of every attempts partition."""
        (row,) = await self._rows(
            "SELECT (SELECT pg_total_relation_size(format('%I.deliveries', CAST(:schema AS text)))) "
            "AS deliveries_bytes, "
            "(SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree("
            "format('%I.attempts', CAST(:schema AS text))::regclass) WHERE isleaf) AS attempts_bytes, "
            "(SELECT coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables WHERE relid = format('%I.deliveries', "
            "CAST(:schema AS text))::regclass) AS deliveries_rows, "
            "(SELECT coalesce(sum(s.n_live_tup), 0) FROM pg_partition_tree(format('%I.attempts', "
            "CAST(:schema AS text))::regclass) t JOIN pg_stat_user_tables s ON s.relid = t.relid WHERE t.isleaf) "
            "AS attempts_rows, "
            "(SELECT count(*) FROM pg_partition_tree(format('%I.attempts', CAST(:schema AS text))::regclass) "
            "WHERE isleaf) AS partitions", {"schema": self.schema})
        return LogSize(int(row["deliveries_bytes"]), int(row["attempts_bytes"]), int(row["deliveries_rows"]),
                       int(row["attempts_rows"]), int(row["partitions"]))
