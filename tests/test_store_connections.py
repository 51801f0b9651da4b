"""The store's hot-path statements run on autocommit connections of their own: a connection the server
ended, or whose statement failed, is never used again."""

from __future__ import annotations

import psycopg
import pytest

from models.errors import StoreError
from publisher.store import Store

BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


async def test_connections_the_server_ended_while_idle_are_replaced_without_an_error(database: str) -> None:
    async with Store(database) as store:
        await store.waiting_entities([(1, "docs/1")])
        await store.waiting_entities([(1, "docs/1")])
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as admin:
            for (pid,) in await (await admin.execute(BACKENDS)).fetchall():
                await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        assert await store.waiting_entities([(1, "docs/1")]) == set()  # on a new connection, at the first try


async def test_a_connection_whose_statement_failed_is_not_used_again(database: str) -> None:
    async with Store(database) as store:
        ((first,),) = await store._binary("SELECT pg_backend_pid()", [], "look")
        with pytest.raises(StoreError, match="look: division by zero"):
            await store._binary("SELECT 1 / 0", [], "look")
        ((after,),) = await store._binary("SELECT pg_backend_pid()", [], "look")
    assert after != first
