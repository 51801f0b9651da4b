"""Failover slots (Postgres 17+): which hosts to reach, and whether each standby could take over the slot.

A failover slot on the primary is copied to a standby that runs with ``sync_replication_slots``.
The copy is only usable after a promotion when it is synced, no longer temporary (it stays
temporary until the primary's slot moves past what the standby can keep) and not invalidated.
``judge_standby`` says so from one row of the standby's ``pg_replication_slots``; ``check_standbys``
reads that row on every standby walhook can see: the other hosts of a multi-host ``dsn`` and
``[source] standby_dsns``.

Capture always talks to the primary: a multi-host ``dsn`` without ``target_session_attrs`` gets
``target_session_attrs=primary``, so after a promotion libpq finds the new primary by itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from models.dsn import hosts_of, primary_dsn
from models.settings import SourceSettings

__all__ = ["StandbyReadiness", "check_standbys", "failover_summary", "hosts_of", "judge_standby", "primary_dsn",
           "readiness_line", "standby_targets"]

FAILOVER_SINCE = 170000  # server_version_num of Postgres 17


@dataclass(frozen=True)
class StandbyReadiness:
    """One standby's copy of the slot: could it take over, and if not, why."""

    standby: str  # host:port
    ready: bool
    reason: str

    def describe(self) -> str:
        return f"{self.standby}: {'ready' if self.ready else self.reason}"


def failover_supported(version: int) -> bool:
    return version >= FAILOVER_SINCE


def standby_targets(source: SourceSettings) -> list[str]:
    """Every DSN that may be a standby: each host of a multi-host ``dsn`` (the primary is told apart by
    ``pg_is_in_recovery``) and ``standby_dsns``."""
    hosts = hosts_of(source.dsn)
    return [*(hosts if len(hosts) > 1 else []), *source.standby_dsns]


def judge_standby(standby: str, row: tuple[object, ...] | None) -> StandbyReadiness:
    """Pure: (synced, temporary, invalidation_reason, failover) of the slot on a standby, or None if missing."""
    if row is None:
        return StandbyReadiness(standby, False, "the slot is not on this standby (needs sync_replication_slots = on, "
                                "hot_standby_feedback = on, primary_slot_name, dbname in primary_conninfo)")
    synced, temporary, invalidation_reason, failover = row
    if invalidation_reason:
        return StandbyReadiness(standby, False, f"the standby's copy is invalidated ({invalidation_reason})")
    if not synced or not failover:
        return StandbyReadiness(standby, False, "the slot here is not a synced failover slot")
    if temporary:
        return StandbyReadiness(standby, False, "the copy is still temporary (it waits for the primary's slot to "
                                "advance past the standby's catalog_xmin); promoting now would lose it")
    return StandbyReadiness(standby, True, "")


def _label(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', '5432')}"


async def standby_readiness(dsn: str, slot: str) -> StandbyReadiness | None:
    """The slot's state on the server at ``dsn``; None when that server is not a standby (the primary)."""
    label = _label(dsn)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
            if not row or not row[0]:
                return None
            cursor = await conn.execute("SELECT synced, temporary, invalidation_reason, failover "
                                        "FROM pg_replication_slots WHERE slot_name = %s", [slot])
            return judge_standby(label, await cursor.fetchone())
    except psycopg.Error as exc:
        return StandbyReadiness(label, False, f"cannot read the standby: {str(exc).strip().splitlines()[0]}")


async def check_standbys(source: SourceSettings) -> list[StandbyReadiness]:
    """The readiness of every standby walhook can see (empty when none is configured or reachable as one)."""
    found = [await standby_readiness(dsn, source.slot) for dsn in standby_targets(source)]
    return [readiness for readiness in found if readiness is not None]


async def nudge_catalog_xmin(conn: psycopg.AsyncConnection) -> None:
    """Log a standby snapshot on the primary so the slot's catalog_xmin advances and a temporary copy on a
    standby can become persistent. Needs superuser; skipped quietly without it (the server logs one every
    15 s on its own while it is busy)."""
    with contextlib.suppress(psycopg.Error):
        await conn.execute("SELECT pg_log_standby_snapshot()")


async def failover_summary(source: SourceSettings) -> tuple[bool | None, list[StandbyReadiness]]:
    """(is the slot a failover slot on the primary - None if unknown or missing, each standby's readiness)."""
    failover: bool | None = None
    with contextlib.suppress(psycopg.Error):
        async with await psycopg.AsyncConnection.connect(primary_dsn(source.dsn), connect_timeout=3) as conn:
            if conn.info.server_version >= FAILOVER_SINCE:
                row = await (await conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s",
                                                [source.slot])).fetchone()
                failover = bool(row[0]) if row else None
            else:
                failover = False
    return failover, await check_standbys(source)


def readiness_line(failover: bool | None, standbys: list[StandbyReadiness]) -> str:
    """One line for ``/readyz`` and ``walhook status``: ``ok``, ``not configured`` or what is missing (pure)."""
    if not standbys:
        return "not configured"
    if failover is False:
        return "not ready: the slot is not a failover slot ([source] failover, Postgres 17+)"
    waiting = [readiness.describe() for readiness in standbys if not readiness.ready]
    return "ok" if not waiting else "not ready: " + "; ".join(waiting)
