"""The store's hot-path statements run on a pool of autocommit connections of their own: one the server
ended while it sat idle is replaced before use, without a failed statement and without a ping."""

from __future__ import annotations

import psycopg

from publisher.store import Store

BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


async def test_connections_the_server_ended_while_idle_are_replaced_without_an_error(database: str) -> None:
    async with Store(database) as store:
        ((before,),) = await store._binary("SELECT pg_backend_pid()", [], "look")
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as admin:
            for (pid,) in await (await admin.execute(BACKENDS)).fetchall():
                await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        # On a new connection, at the first try: the ended one is noticed before the statement is sent.
        assert await store.waiting_entities([(1, "docs/1")]) == set()
        ((after,),) = await store._binary("SELECT pg_backend_pid()", [], "look")
    assert after != before
