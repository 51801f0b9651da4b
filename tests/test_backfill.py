"""Backfills on the real stack: existing rows become ``read`` events in Kafka while the stream runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from cdc.pipeline import CaptureStats, run_capture
from models.errors import Conflict
from models.events import ChangeEvent
from models.settings import BackfillSettings, EntitySettings
from publisher.store import Backfill, Store
from tests.conftest import Servers
from tests.support import until_streaming
from tests.test_capture import read_topic, settings

pytestmark = pytest.mark.stack

ENTITY = EntitySettings(table="items", entity_key="shop/items", entity_path="items/{id}", collection_path="items",
                        organization_column="org")
SMALL_CHUNKS = BackfillSettings(chunk_rows=50, max_chunk_rows=200, poll_interval=0.1)


async def make_items(database: str, rows: int) -> None:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text, name text, version int NOT NULL)")
        await conn.execute("INSERT INTO items SELECT i, CASE WHEN i %% 2 = 0 THEN 'acme' ELSE 'globex' END, "
                           "'item ' || i, 1 FROM generate_series(1, %s) i", [rows])


@contextlib.asynccontextmanager
async def capturing(database: str, servers: Servers, topic: str, store: Store,
                    backfill: BackfillSettings = SMALL_CHUNKS,
                    stats: CaptureStats | None = None) -> AsyncIterator[asyncio.Task[None]]:
    source, kafka = settings(database, servers, topic)
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [ENTITY], stop, stats=stats, store=store,
                                           backfill=backfill))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def until_finished(store: Store, backfill_id: int, timeout: float = 30.0) -> Backfill:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await store.backfill(None, backfill_id)
        if job.finished:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"backfill {backfill_id} did not finish in {timeout}s: {job}")


async def test_existing_rows_become_read_events(database: str, servers: Servers, topic: str) -> None:
    await make_items(database, 500)
    async with Store(database) as store, capturing(database, servers, topic, store):
        job = await store.create_backfill("public.items")
        done = await until_finished(store, job.id)
    assert (done.state, done.rows_read, done.rows_published, done.rows_superseded) == ("done", 500, 500, 0)
    assert done.chunks >= 3 and done.key_columns == ["id"] and done.cursor == ["500"]
    events = await read_topic(servers.bootstrap_servers, topic, 500)
    reads = [event for event in events if event["operationType"] == "read"]
    assert sorted(int(event["entityId"]) for event in reads) == list(range(1, 501))
    event = next(e for e in reads if e["entityId"] == "7")
    ChangeEvent.model_validate(event)
    assert event["data"]["value"]["properties"] == {"id": 7, "org": "globex", "name": "item 7", "version": 1}
    assert event["data"]["oldValue"] is None and event["data"]["updateMask"] is None
    assert event["eventId"].startswith("evt_") and f"_r{job.id}_" in event["eventId"]
    assert len({e["eventId"] for e in reads}) == 500


async def test_filter_and_organization_scope_the_rows(database: str, servers: Servers, topic: str) -> None:
    await make_items(database, 300)
    async with Store(database) as store, capturing(database, servers, topic, store):
        await store.add_organization("acme")
        job = await store.create_backfill("public.items", organization_id="acme", row_filter="id <= 100 AND id > 10")
        done = await until_finished(store, job.id)
    assert (done.state, done.rows_read) == ("done", 45)  # even ids 12..100
    reads = [e for e in await read_topic(servers.bootstrap_servers, topic, 45) if e["operationType"] == "read"]
    assert {e["organizationId"] for e in reads} == {"acme"} and len(reads) == 45


async def test_refused_without_a_key_or_with_an_unknown_column(database: str, servers: Servers, topic: str) -> None:
    await make_items(database, 10)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute("ALTER TABLE items DROP CONSTRAINT items_pkey")
    async with Store(database) as store, capturing(database, servers, topic, store):
        no_key = await until_finished(store, (await store.create_backfill("public.items")).id)
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            await conn.execute("ALTER TABLE items ADD PRIMARY KEY (id)")
        bad_column = await until_finished(store, (await store.create_backfill("public.items",
                                                                              row_filter="colour = 'red'")).id)
    assert no_key.state == "failed" and "has no primary key and no replica identity index" in (no_key.error or "")
    assert bad_column.state == "failed" and "unknown column(s) colour" in (bad_column.error or "")


async def test_a_second_backfill_for_the_same_target_is_refused(database: str) -> None:
    async with Store(database) as store:
        first = await store.create_backfill("public.items")
        with pytest.raises(Conflict, match="already running or paused"):
            await store.create_backfill("public.items")
        await store.change_backfill(None, first.id, "cancel")
        await store.create_backfill("public.items")


async def test_changes_during_the_backfill_are_never_overtaken(database: str, servers: Servers, topic: str) -> None:
    """Rows updated and deleted while they are read: per entity, Kafka order ends with the database's state."""
    await make_items(database, 2000)
    writes = 0

    async def writer(stop: asyncio.Event) -> None:
        nonlocal writes
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            for n in range(3000):
                if stop.is_set():
                    return
                item = 1 + (n * 7919) % 2000
                if n % 10 == 9:
                    cursor = await conn.execute("DELETE FROM items WHERE id = %s", [item])
                else:
                    cursor = await conn.execute("UPDATE items SET version = version + 1 WHERE id = %s", [item])
                writes += cursor.rowcount  # a row already deleted changes nothing: no event
                await asyncio.sleep(0.002)

    async with Store(database) as store, capturing(database, servers, topic, store,
                                                   BackfillSettings(chunk_rows=20, max_chunk_rows=40,
                                                                    poll_interval=0.1)):
        await until_streaming(database)  # changes written before the slot exists are not captured
        stop = asyncio.Event()
        writing = asyncio.create_task(writer(stop))
        job = await store.create_backfill("public.items")
        done = await until_finished(store, job.id, 60)
        stop.set()
        await writing
        await asyncio.sleep(1.0)
    assert done.state == "done" and done.rows_read == done.rows_published + done.rows_superseded
    async with await psycopg.AsyncConnection.connect(database) as conn:
        final = dict(await (await conn.execute("SELECT id, version FROM items")).fetchall())
    last: dict[int, tuple[str, int]] = {}
    events = await read_topic(servers.bootstrap_servers, topic, done.rows_published + writes, timeout=30)
    for event in events:
        side = event["data"]["oldValue"] if event["operationType"] == "deleted" else event["data"]["value"]
        item, version = int(event["entityId"]), side["properties"]["version"]
        if item in last and event["operationType"] == "read":
            assert version >= last[item][1], f"read of item {item} v{version} after {last[item]}"
        if item in last and last[item][0] == "read" and event["operationType"] == "updated":
            assert version > last[item][1], f"update of item {item} to v{version} after {last[item]}"
        last[item] = (event["operationType"], version)
    assert {item: version for item, (op, version) in last.items() if op != "deleted"} == final
    assert all(last[item][0] == "deleted" for item in set(range(1, 2001)) - set(final))
    assert writes > 100 and len(events) == done.rows_published + writes
