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
