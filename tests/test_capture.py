"""The capture half on the real stack: Postgres -> pgoutput -> events in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from cdc.errors import SlotBusyError, SourceError
from cdc.kafka import ensure_topic
from cdc.lsn import parse_lsn
from cdc.pipeline import CapturePipeline, CaptureStats, run_capture
from models.events import ChangeEvent
from models.settings import EntitySettings, KafkaSettings, SourceSettings
from tests.conftest import Servers
from tests.support import until_streaming, wait_for

ENTITY = EntitySettings(table="items", entity_key="items", entity_path="items/{id}", collection_path="items",
                        organization_column="org")


async def read_topic(bootstrap_servers: str, topic: str, expected: int, timeout: float = 20.0) -> list[dict]:
    """Every event on ``topic`` (at least ``expected`` of them), in per-partition order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(events) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                events.extend(orjson.loads(record.value) for record in records)
        for records in (await consumer.getmany(timeout_ms=500)).values():  # anything beyond
            events.extend(orjson.loads(record.value) for record in records)
    finally:
        await consumer.stop()
    return events


def settings(database: str, servers: Servers, topic: str,
             row_path: str = "auto") -> tuple[SourceSettings, KafkaSettings]:
    return (SourceSettings(dsn=database, status_interval=0.1, row_path=row_path),
            KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=3, linger_ms=1))


async def confirmed_flush(database: str) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")).fetchone()
        assert row is not None
        return parse_lsn(row[0])


@contextlib.asynccontextmanager
async def capturing(source: SourceSettings, kafka: KafkaSettings,  # type: ignore[no-untyped-def]
                    entities: list[EntitySettings] | None = None, stats: CaptureStats | None = None):
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, entities or [ENTITY], stop, stats=stats))
    try:
        await until_streaming(source.dsn, task)
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def insert_position(database: str) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute("SELECT pg_current_wal_insert_lsn()::text")).fetchone()
        assert row is not None
        return parse_lsn(row[0])


async def write_batch(database: str, start: int, count: int, rollback_every: int = 5) -> set[int]:
    """Insert then update ``count`` items, one transaction each; every n-th is rolled back."""
    committed: set[int] = set()
    async with await psycopg.AsyncConnection.connect(database) as conn:
        for item in range(start, start + count):
            async with conn.transaction(force_rollback=item % rollback_every == 0):
                await conn.execute("INSERT INTO items (id, org, name) VALUES (%s, 'acme', 'new')", [item])
                await conn.execute("UPDATE items SET name = 'renamed' WHERE id = %s", [item])
            if item % rollback_every:
                committed.add(item)
    return committed


async def test_restart_loses_nothing_and_keeps_per_entity_order(database: str, servers: Servers, topic: str,
                                                                row_path: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text, name text)")
    source, kafka = settings(database, servers, topic, row_path)

    async with capturing(source, kafka):
        committed = await write_batch(database, 1, 40)
        await asyncio.sleep(1.0)
    committed |= await write_batch(database, 41, 40)  # written while capture is down
    async with capturing(source, kafka):
        committed |= await write_batch(database, 81, 40)
        last_commit_end = await insert_position(database)
        events = await read_topic(servers.bootstrap_servers, topic, expected=2 * len(committed))
        await asyncio.sleep(0.5)
        lsn_after = await confirmed_flush(database)

    for event in events:
        ChangeEvent.model_validate(event)
    by_entity: dict[str, list[str]] = defaultdict(list)
    for event in events:
        by_entity[event["entityId"]].append(event["operationType"])
    assert {int(entity) for entity in by_entity} == committed  # nothing lost, nothing rolled back
    assert all(ops[:2] == ["created", "updated"] for ops in by_entity.values())  # commit order per entity
    by_id: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_id[event["eventId"]].append(event)
    assert len(by_id) == 2 * len(committed)
    assert all(copy == copies[0] for copies in by_id.values() for copy in copies)  # re-reads are identical
    assert lsn_after >= last_commit_end - 64  # confirmed up to the last commit once Kafka has it all


async def test_a_change_committed_while_a_batch_lingers_leaves_with_it(database: str, servers: Servers,
                                                                     topic: str) -> None:
    """A change committed while an open batch waits for company (``linger_ms``) is read before that batch
    leaves, and leaves with it rather than with the next one: a consumer sees both at once."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text, name text)")
    source, kafka = settings(database, servers, topic)
    kafka = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topic=topic, partitions=1, linger_ms=5_000)
    await ensure_topic(kafka)
    stats = CaptureStats()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers.bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        async with capturing(source, kafka, stats=stats):
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO items (id, org, name) VALUES (1, 'acme', 'new')")
                await wait_for(lambda: stats.events_captured == 1, what="the first change to open a batch")
                conn.execute("INSERT INTO items (id, org, name) VALUES (2, 'acme', 'new')")  # it lingers now
            first = await first_records(consumer)
    finally:
        await consumer.stop()
    assert [orjson.loads(record.value)["entityId"] for record in first] == ["1", "2"]


async def first_records(consumer: AIOKafkaConsumer, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of the first fetch that returns any."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        if batch:
            return [record for records in batch.values() for record in records]
    raise AssertionError("no record arrived")


async def test_a_second_process_on_a_busy_slot_gets_a_clear_message(
        database: str, servers: Servers, topic: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text, name text)")
    source, kafka = settings(database, servers, topic)
    async with capturing(source, kafka):
        await asyncio.sleep(1.5)
        with pytest.raises(SlotBusyError, match="slot 'walhook' is in use by process"):
            await CapturePipeline(source, kafka, [ENTITY]).run(asyncio.Event())


async def test_a_missing_table_is_named(database: str, servers: Servers, topic: str) -> None:
    source, kafka = settings(database, servers, topic)
    with pytest.raises(SourceError, match=r"table public.items named in \[\[entities\]\] does not exist"):
        await CapturePipeline(source, kafka, [ENTITY]).run(asyncio.Event())


async def test_publication_covers_only_configured_tables_and_grows(
        database: str, servers: Servers, topic: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text, name text)")
        conn.execute("CREATE TABLE others (id int PRIMARY KEY, org text)")
        conn.execute("CREATE TABLE unrelated (id int PRIMARY KEY)")
    source, kafka = settings(database, servers, topic)
    async with capturing(source, kafka):
        pass  # the slot and publication exist, for the configured table only
    other = EntitySettings(table="others", entity_key="others", entity_path="others/{id}", collection_path="others")
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [ENTITY, other], stop))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(task, 20)
    with psycopg.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_publication_tables")}
        identity = dict(conn.execute("SELECT relname, relreplident FROM pg_class WHERE relname IN "
                                     "('items', 'others', 'unrelated')").fetchall())
    assert tables == {"items", "others"}
    assert identity == {"items": "f", "others": "f", "unrelated": "d"}
