"""Fault injectors for the servers: broker restart, Postgres restart, walsender cut, store outage.

Each is a coroutine that breaks one thing, waits, and repairs it; the blocking server controls run in
a thread so the receivers (same event loop) keep answering meanwhile.
"""

from __future__ import annotations

import asyncio

import psycopg

from tests.chaos.servers import ChaosServers


async def restart_broker(servers: ChaosServers, down_seconds: float) -> None:
    """Stop the broker, leave it down, start it again (an external one: its restart command does both)."""
    await asyncio.to_thread(servers.stop_broker)
    await asyncio.sleep(down_seconds)
    await asyncio.to_thread(servers.start_broker)


async def restart_postgres(servers: ChaosServers, mode: str, down_seconds: float) -> None:
    """Stop Postgres with a ``fast`` or ``immediate`` shutdown, then start it again (crash recovery for
    ``immediate``). The source and the store go down together: they share the server."""
    postgres = servers.postgres
    assert postgres is not None
    await asyncio.to_thread(postgres.stop, mode)
    await asyncio.sleep(down_seconds)
    await asyncio.to_thread(postgres.start, 60.0)


async def cut_walsender(dsn: str, slot: str = "walhook") -> bool:
    """Terminate the walsender streaming ``slot`` (the replication connection drops); False if none did."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                                        "WHERE slot_name = %s AND active_pid IS NOT NULL", [slot])).fetchone()
    return bool(row and row[0])


async def store_unavailable(admin_dsn: str, seconds: float, database: str = "store") -> None:
    """Refuse new connections to the store database and end the open ones, for ``seconds``."""
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        try:
            deadline = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < deadline:  # reconnects in between are ended too
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                   "AND pid <> pg_backend_pid()", [database])
                await asyncio.sleep(0.5)
        finally:
            await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")


async def wait_failover_ready(servers: ChaosServers, slot: str = "walhook", timeout: float = 90.0) -> str:
    """Until the standby's copy of ``slot`` could take over (synced, persistent, valid); raises if it never does.

    Each round logs a standby snapshot on the primary: the copy stays temporary until the primary's
    slot moves past the catalog_xmin the standby can keep, and a snapshot lets it move.
    """
    from cdc.failover import standby_readiness

    assert servers.postgres is not None and servers.standby is not None
    deadline = asyncio.get_running_loop().time() + timeout
    async with await psycopg.AsyncConnection.connect(servers.node_dsn(servers.postgres), autocommit=True) as conn:
        while True:
            readiness = await standby_readiness(servers.node_dsn(servers.standby), slot)
            if readiness is not None and readiness.ready:
                return readiness.describe()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"slot {slot} never became failover-ready: "
                                     f"{readiness.describe() if readiness else 'the standby is not in recovery'}")
            await conn.execute("SELECT pg_log_standby_snapshot()")
            await asyncio.sleep(0.5)


async def crash_primary_and_promote(servers: ChaosServers) -> None:
    """``-m immediate`` on the primary (no shutdown checkpoint, walsenders cut), then promote the standby."""
    assert servers.postgres is not None and servers.standby is not None
    await asyncio.to_thread(servers.postgres.stop, "immediate")
    async with await psycopg.AsyncConnection.connect(servers.node_dsn(servers.standby), autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_promote(true, 60)")).fetchone()
    if not row or not row[0]:
        raise AssertionError("the standby did not finish its promotion within 60 s")
