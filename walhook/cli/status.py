"""``walhook status``: the slot as the source server sees it, and whether a standby could take it over."""

from __future__ import annotations

import argparse

from walhook.cli.common import Command, settings_of, show


async def cmd_status(args: argparse.Namespace) -> int:
    from cdc.failover import failover_summary, readiness_line
    from cdc.source import connect_control, slot_lag_bytes

    settings = settings_of(args)
    settings.require("source")
    assert settings.source is not None
    source = settings.source
    async with await connect_control(source.dsn) as conn:
        row = await (await conn.execute("SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots "
                                        "WHERE slot_name = %s", [source.slot])).fetchone()
        lag = await slot_lag_bytes(conn, source.slot)
    failover, standbys = await failover_summary(source)
    data = {"slot": source.slot, "exists": row is not None, "active": bool(row and row[0]),
            "confirmed_lsn": row[1] if row else None, "lag_bytes": lag, "failover_slot": failover,
            "failover": readiness_line(failover, standbys),
            "standbys": [{"standby": s.standby, "ready": s.ready, "reason": s.reason} for s in standbys]}
    state = "missing" if row is None else ("streaming" if row[0] else "not streaming")
    lines = [f"slot {source.slot}: {state}, confirmed {data['confirmed_lsn'] or '-'}, lag {lag} bytes, "
             f"failover slot {'yes' if failover else 'no' if failover is False else '-'}",
             f"failover: {data['failover']}", *(f"  standby {s.describe()}" for s in standbys)]
    show(args, data, "\n".join(lines))
    return 0


def register(command: Command) -> None:
    command("status", cmd_status, "the slot (streaming, confirmed LSN, lag) and its readiness for a failover")
