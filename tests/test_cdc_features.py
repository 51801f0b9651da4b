"""CDC behaviours beyond the happy path, each on the real stack."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import psycopg
import pytest

from cdc.errors import KafkaWriteError, SlotInvalidated, SourceError
from cdc.lsn import parse_lsn
from cdc.pipeline import CaptureStats, run_capture
from models.settings import EntitySettings, KafkaSettings, SourceSettings
from tests.conftest import Servers
from tests.support import until_streaming
from tests.test_capture import capturing, read_topic
from walhook.stack import PostgresServer

DOCS = EntitySettings(table="docs", entity_key="docs", entity_path="docs/{id}", collection_path="docs",
                      organization_column="org")
DOCS_TABLE = "CREATE TABLE docs (id int PRIMARY KEY, org text, title text, body text)"


def setup(database: str, *statements: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def source_and_kafka(database: str, servers: Servers, topic: str, row_path: str = "auto",
                     **kafka: object) -> tuple[SourceSettings, KafkaSettings]:
    return (SourceSettings(dsn=database, status_interval=0.1, heartbeat_interval=0.3, row_path=row_path),
            KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1, linger_ms=1,
                          **kafka))


async def lsn_of(database: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return parse_lsn(row[0])


async def slot_position(database: str) -> int:
    return await lsn_of(database, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots")


async def current_lsn(database: str) -> int:
    return await lsn_of(database, "SELECT pg_current_wal_lsn()::text")


async def test_heartbeat_advances_an_idle_slot(database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE, "CREATE TABLE unrelated (id serial PRIMARY KEY, note text)")
    source, kafka = source_and_kafka(database, servers, topic)
    stats = CaptureStats()
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [DOCS], stop, stats=stats))
    try:
        await until_streaming(database, task)
        before = await slot_position(database)
        setup(database, *["INSERT INTO unrelated (note) VALUES ('x')"] * 20)  # WAL the slot must not hold
        await asyncio.sleep(1.5)
        after = await slot_position(database)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert after > before
    age = stats.heartbeat_age()
    assert age is not None and age < 3.0  # the heartbeat came back through the stream
    assert stats.slot_lag_bytes is not None


async def test_a_one_megabyte_toasted_value_survives_an_update_of_another_column(
        database: str, servers: Servers, topic: str, row_path: str) -> None:
    setup(database, DOCS_TABLE)
    big = os.urandom(512 * 1024).hex()  # 1 MB of incompressible text: stored out of line (TOAST)
    source, kafka = source_and_kafka(database, servers, topic, row_path, max_request_size=8 * 1024 * 1024)
    async with capturing(source, kafka, [DOCS]):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO docs VALUES (1, 'acme', 'draft', %s)", [big])
            conn.execute("UPDATE docs SET title = 'final' WHERE id = 1")
        events = await read_topic(servers.bootstrap_servers, topic, expected=2)
    update = events[1]
    assert update["operationType"] == "updated"
    assert update["data"]["updateMask"] == ["title"]
    assert update["data"]["value"]["properties"]["body"] == big
    assert update["data"]["oldValue"]["properties"]["body"] == big


async def test_a_primary_key_change_is_an_update_that_names_both_paths(
        database: str, servers: Servers, topic: str, row_path: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic, row_path)
    async with capturing(source, kafka, [DOCS]):
        setup(database, "INSERT INTO docs VALUES (1, 'acme', 't', 'b')", "UPDATE docs SET id = 2 WHERE id = 1")
        events = await read_topic(servers.bootstrap_servers, topic, expected=2)
    update = events[1]
    assert update["operationType"] == "updated"
    assert update["entityPath"] == "docs/2" and update["entityId"] == "2"
    assert update["data"]["oldValue"]["key"] == "docs/1"
    assert update["data"]["updateMask"] == ["id"]


async def test_schema_changes_while_streaming_are_picked_up(database: str, servers: Servers, topic: str,
                                                            row_path: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic, row_path)
    async with capturing(source, kafka, [DOCS]):
        setup(database,
              "INSERT INTO docs VALUES (1, 'acme', 'one', 'b')",
              "ALTER TABLE docs ADD COLUMN priority int DEFAULT 3",
              "INSERT INTO docs VALUES (2, 'acme', 'two', 'b', 5)",
              "ALTER TABLE docs RENAME COLUMN title TO headline",
              "INSERT INTO docs VALUES (3, 'acme', 'three', 'b', 1)",
              "ALTER TABLE docs DROP COLUMN body",
              "ALTER TABLE docs ALTER COLUMN priority TYPE numeric(4,1)",
              "INSERT INTO docs VALUES (4, 'acme', 'four', 2.5)")
        events = await read_topic(servers.bootstrap_servers, topic, expected=4)
    properties = [event["data"]["value"]["properties"] for event in events]
    assert properties[0] == {"id": 1, "org": "acme", "title": "one", "body": "b"}
    assert properties[1] == {"id": 2, "org": "acme", "title": "two", "body": "b", "priority": 5}
    assert properties[2] == {"id": 3, "org": "acme", "headline": "three", "body": "b", "priority": 1}
    assert properties[3] == {"id": 4, "org": "acme", "headline": "four", "priority": "2.5"}


@pytest.mark.parametrize("mode", ["event", "skip"])
async def test_truncate_is_an_event_or_skipped(database: str, servers: Servers, topic: str, mode: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic)
    source = source.model_copy(update={"truncate": mode})
    async with capturing(source, kafka, [DOCS]):
        setup(database, "INSERT INTO docs VALUES (1, 'acme', 't', 'b')", "TRUNCATE docs",
              "INSERT INTO docs VALUES (2, 'acme', 't', 'b')")
        events = await read_topic(servers.bootstrap_servers, topic, expected=3 if mode == "event" else 2)
    operations = [event["operationType"] for event in events]
    if mode == "skip":
        assert operations == ["created", "created"]
        return
    assert operations == ["created", "truncated", "created"]
    truncated = events[1]
    assert truncated["entityKey"] == "docs" and truncated["collectionPath"] == "docs"
    assert truncated["organizationId"] is None and truncated["data"]["value"] is None


async def test_an_event_kafka_refuses_stops_the_stream_with_its_name(
        database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic, max_request_size=4096, on_refused_event="stop")
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [DOCS], stop))
    await until_streaming(database, task)
    setup(database, "INSERT INTO docs VALUES (1, 'acme', 'big', repeat('x', 20000))")
    with pytest.raises(KafkaWriteError, match=r"refused event evt_\w+ \(docs/1, \d+ bytes\).*on_refused_event"):
        await asyncio.wait_for(task, 20)
    assert await slot_position(database) < await current_lsn(database)  # the refused change stays in the slot


async def test_an_event_kafka_refuses_goes_to_the_dead_letter_topic_and_the_stream_moves_on(
        database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE)
    dead_letters = f"{topic}.dead"
    source, kafka = source_and_kafka(database, servers, topic, max_request_size=4096, dead_letter_topic=dead_letters)
    async with capturing(source, kafka, [DOCS]):
        setup(database, "INSERT INTO docs VALUES (1, 'acme', 'big', repeat('x', 20000))",
              "INSERT INTO docs VALUES (2, 'acme', 'small', 'b')")
        events = await read_topic(servers.bootstrap_servers, topic, expected=1)
        refused = await read_topic(servers.bootstrap_servers, dead_letters, expected=1)
        await asyncio.sleep(0.5)
        position = await slot_position(database)
    assert [event["entityPath"] for event in events] == ["docs/2"]
    (record,) = refused
    assert record["entityPath"] == "docs/1" and record["size"] > 20000
    assert "MessageSizeTooLarge" in record["reason"]
    assert position >= parse_lsn(events[0]["transaction"]["commitLsn"])


async def test_a_role_without_replication_is_told_what_to_run(database: str, servers: Servers, topic: str) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    setup(database, DOCS_TABLE, f"CREATE ROLE {role} LOGIN")
    source, kafka = source_and_kafka(database, servers, topic)
    params = psycopg.conninfo.conninfo_to_dict(database)
    source = source.model_copy(update={"dsn": psycopg.conninfo.make_conninfo(**{**params, "user": role})})
    try:
        with pytest.raises(SourceError, match=f"role {role} may not stream changes; run ALTER ROLE {role} REPLICATION"):
            await run_capture(source, kafka, [DOCS], asyncio.Event())
    finally:
        setup(database, f"DROP ROLE {role}")


async def test_a_partitioned_table_is_captured_through_its_root(database: str, servers: Servers, topic: str) -> None:
    setup(database, "CREATE TABLE readings (id int, org text, at date, value float8, PRIMARY KEY (id, at)) "
                    "PARTITION BY RANGE (at)",
          "CREATE TABLE readings_2024 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
          "CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    entity = EntitySettings(table="readings", entity_key="readings", entity_path="readings/{id}",
                            collection_path="readings", organization_column="org")
    source, kafka = source_and_kafka(database, servers, topic)
    async with capturing(source, kafka, [entity]):
        setup(database, "INSERT INTO readings VALUES (1, 'acme', '2024-06-01', 1.5), (2, 'acme', '2025-06-01', 2.5)",
              "UPDATE readings SET value = 3.5 WHERE id = 2")
        events = await read_topic(servers.bootstrap_servers, topic, expected=3)
    assert [(e["entityPath"], e["operationType"]) for e in events] == [
        ("readings/1", "created"), ("readings/2", "created"), ("readings/2", "updated")]
    assert events[2]["data"]["updateMask"] == ["value"]


async def test_without_full_identity_updates_carry_no_mask(database: str, servers: Servers, topic: str,
                                                           row_path: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic, row_path)
    source = source.model_copy(update={"set_replica_identity_full": False})
    async with capturing(source, kafka, [DOCS]):
        setup(database, "INSERT INTO docs VALUES (1, 'acme', 't', 'b')", "UPDATE docs SET title = 'u' WHERE id = 1",
              "DELETE FROM docs WHERE id = 1")
        events = await read_topic(servers.bootstrap_servers, topic, expected=3)
    update, delete = events[1], events[2]
    assert update["data"]["oldValue"] is None and update["data"]["updateMask"] is None
    assert update["data"]["value"]["properties"]["title"] == "u"
    assert delete["data"]["oldValue"]["properties"] == {"id": 1}  # only the key: what Postgres sent


async def test_a_cut_replication_connection_is_resumed_without_loss(
        database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE)
    source, kafka = source_and_kafka(database, servers, topic)
    async with capturing(source, kafka, [DOCS]):
        for round_ in range(3):
            setup(database, *[f"INSERT INTO docs VALUES ({round_ * 10 + i}, 'acme', 't', 'b')" for i in range(10)])
            setup(database, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active "
                  "AND database = current_database()")
            await asyncio.sleep(0.3)
        # Re-reads after a reconnect are duplicates, so wait for all 30 entities, not for 30 events.
        deadline = asyncio.get_running_loop().time() + 30
        seen: set[int] = set()
        while seen != set(range(30)) and asyncio.get_running_loop().time() < deadline:
            events = await read_topic(servers.bootstrap_servers, topic, expected=30, timeout=5)
            seen = {int(event["entityId"]) for event in events}
    assert seen == set(range(30))


async def test_a_slot_of_another_plugin_is_refused(database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE, "SELECT pg_create_logical_replication_slot('walhook', 'test_decoding')")
    source, kafka = source_and_kafka(database, servers, topic)
    with pytest.raises(SourceError, match="uses plugin 'test_decoding', not pgoutput"):
        await run_capture(source, kafka, [DOCS], asyncio.Event())


async def test_wal_level_replica_is_refused_with_what_to_change(server_dir: Path, servers: Servers, topic: str) -> None:
    server = PostgresServer(server_dir / "replica-only" / "data", settings={"wal_level": "replica"})
    server.start()
    try:
        source, kafka = source_and_kafka(server.dsn, servers, topic)
        with pytest.raises(SourceError, match="wal_level is 'replica'; set wal_level = logical"):
            await run_capture(source, kafka, [DOCS], asyncio.Event())
    finally:
        server.stop()


async def test_a_slot_postgres_invalidated_is_refused_with_how_to_recover(server_dir: Path, servers: Servers,
                                                                         topic: str) -> None:
    # A server that keeps at most 1 MB of WAL for slots: a slot nobody reads is given up at the next checkpoint.
    server = PostgresServer(server_dir / "small-wal" / "data", settings={"max_slot_wal_keep_size": "1MB"})
    server.start()
    try:
        setup(server.dsn, DOCS_TABLE, "SELECT pg_create_logical_replication_slot('walhook', 'pgoutput')")
        for n in range(4):  # four WAL segments past the slot
            setup(server.dsn, f"INSERT INTO docs (id, title, body) VALUES ({n}, 't', 'b')", "SELECT pg_switch_wal()")
        setup(server.dsn, "CHECKPOINT")
        with psycopg.connect(server.dsn) as conn:
            status = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()
        assert status == ("lost",)
        source, kafka = source_and_kafka(server.dsn, servers, topic)
        with pytest.raises(SlotInvalidated, match=r"invalidated by Postgres.*pg_drop_replication_slot\('walhook'\)"):
            await run_capture(source, kafka, [DOCS], asyncio.Event())
    finally:
        server.stop()
