"""Bad data through the real capture: values at type limits, huge and deep JSON, 10 MB values,
unusual identifiers and tables without a primary key.

Each case ends one of two ways: the event arrives in the documented JSON form, or there is a clear
error naming the problem and the rows after it still flow. The common limits (int2/4/8 min and max,
float and numeric NaN and Infinity, timestamp infinity, empty text, every byte in bytea) are in
``test_types``; this module adds what lies beyond them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc.errors import MappingError, SourceError
from cdc.pipeline import run_capture
from models.events import ChangeEvent
from models.settings import EntitySettings, KafkaSettings, SourceSettings
from tests.conftest import Servers, _drop_slots
from tests.support import until_streaming

BIG = 64 << 20  # producer and consumer limits for the cases whose events are meant to arrive whole


def entity(table: str, path: str = "rows/{id}", **options: Any) -> EntitySettings:
    return EntitySettings(table=table, entity_key=table, entity_path=path, collection_path="rows", **options)


def execute(database: str, *statements: str | tuple[str, list[Any]]) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        for statement in statements:
            query, params = statement if isinstance(statement, tuple) else (statement, None)
            conn.execute(query, params)


class Capture:
    """``run_capture`` in-process; ``events`` reads the topic and fails at once if the capture stopped."""

    def __init__(self, servers: Servers, topic: str, task: asyncio.Task[None]) -> None:
        self.servers, self.topic, self.task = servers, topic, task

    async def events(self, expected: int, topic: str | None = None, timeout: float = 20.0) -> list[dict[str, Any]]:
        return [orjson.loads(value) for value in await self.records(expected, topic, timeout)]

    async def records(self, expected: int, topic: str | None = None, timeout: float = 20.0) -> list[bytes]:
        """The raw record values, for JSON deeper than a parser will read."""
        consumer = AIOKafkaConsumer(topic or self.topic, bootstrap_servers=self.servers.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                    fetch_max_bytes=BIG, max_partition_fetch_bytes=BIG)
        await consumer.start()
        found: list[bytes] = []
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while len(found) < expected and asyncio.get_running_loop().time() < deadline:
                if self.task.done():
                    self.task.result()  # raises what stopped the capture
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    found.extend(record.value or b"" for record in records)
        finally:
            await consumer.stop()
        assert len(found) >= expected, f"{len(found)} of {expected} events arrived"
        return found


@contextlib.asynccontextmanager
async def capturing(database: str, servers: Servers, topic: str, entities: list[EntitySettings],
                    source: dict[str, Any] | None = None, row_path: str = "auto",
                    **kafka: Any) -> AsyncIterator[Capture]:
    """Capture until the block ends; yields once the slot is streaming."""
    settings = SourceSettings(dsn=database, status_interval=0.1, row_path=row_path, **(source or {}))
    kafka_settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1,
                                   linger_ms=1, **kafka)
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(settings, kafka_settings, entities, stop))
    try:
        await until_streaming(database, task, timeout=20)
        yield Capture(servers, topic, task)
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # a capture that failed has said so in the test already
            await asyncio.wait_for(task, 20)


def properties(event: dict[str, Any]) -> dict[str, Any]:
    return event["data"]["value"]["properties"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- type limits

LIMITS = {  # column type, SQL literal, the documented JSON value
    "numeric_minus_infinity": ("numeric", "'-Infinity'", "-Infinity"),
    "numeric_131072_digits": ("numeric", "repeat('9', 131072)::numeric", "9" * 131072),
    "numeric_16383_decimals": ("numeric", "('0.' || repeat('1', 16383))::numeric", "0." + "1" * 16383),
    "numeric_both": ("numeric", "('-' || repeat('7', 1000) || '.' || repeat('3', 1000))::numeric",
                     "-" + "7" * 1000 + "." + "3" * 1000),
    "timestamp_max": ("timestamp", "'294276-12-31 23:59:59.999999'", "294276-12-31T23:59:59.999999"),
    "timestamptz_max": ("timestamptz", "'294276-12-31 23:59:59.999999+00'", "294276-12-31T23:59:59.999999Z"),
    "date_max": ("date", "'5874897-12-31'", "5874897-12-31"),
    "date_bc": ("date", "'4713-01-01 BC'", "4713-01-01 BC"),  # date is its text form
    "bytea_zeros": ("bytea", "'\\x000000'::bytea", "AAAA"),
    "text_empty": ("text", "''", ""),
    "varchar_empty": ("varchar(3)", "''", ""),
    "text_array_of_empty": ("text[]", "ARRAY['', '']", ["", ""]),
    "real_nan": ("float4", "'NaN'", "NaN"),
    "int8_min": ("int8", "-9223372036854775808", -9223372036854775808),
}


async def test_values_at_type_limits_arrive_in_their_documented_form(
        database: str, servers: Servers, topic: str, row_path: str) -> None:
    columns = ", ".join(f"{name} {kind}" for name, (kind, _, _) in LIMITS.items())
    execute(database, f"CREATE TABLE limits (id int PRIMARY KEY, {columns})")
    async with capturing(database, servers, topic, [entity("limits")], row_path=row_path,
                         max_request_size=BIG) as capture:
        execute(database, f"INSERT INTO limits VALUES (1, {', '.join(sql for _, sql, _ in LIMITS.values())})",
                "UPDATE limits SET text_empty = 'x' WHERE id = 1")
        created, updated = await capture.events(2)
    ChangeEvent.model_validate(created)
    assert {name: properties(created)[name] for name in LIMITS} == {name: want for name, (_, _, want) in
                                                                    LIMITS.items()}
    assert updated["data"]["updateMask"] == ["text_empty"]
    assert properties(updated)["numeric_131072_digits"] == "9" * 131072


async def test_timestamps_before_christ_are_iso_8601(database: str, servers: Servers, topic: str,
                                                     row_path: str) -> None:
    execute(database, "CREATE TABLE old (id int PRIMARY KEY, ts timestamp, tstz timestamptz, first_tstz timestamptz)")
    async with capturing(database, servers, topic, [entity("old")], row_path=row_path) as capture:
        execute(database, "INSERT INTO old VALUES (1, '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00.5+00 BC', "
                          "'4714-11-24 00:00:00+00 BC')")
        (created,) = await capture.events(1)
    # ISO 8601 counts years astronomically: 1 BC is year 0000, 4713 BC is -4712.
    assert properties(created) == {"id": 1, "ts": "-4712-01-01T00:00:00", "tstz": "-4712-01-01T00:00:00.5Z",
                                   "first_tstz": "-4713-11-24T00:00:00Z"}


# ---------------------------------------------------------------------------------------------- JSON and size

def wide_document(megabytes: float) -> dict[str, Any]:
    """A jsonb document of about ``megabytes``: many nested objects and arrays, no floats (exact equality)."""
    item = {"name": "ünïcödé ☃ " * 4, "tags": ["a", "b", "c"], "nested": {"a": {"b": {"c": [1, 2, {"d": None}]}}}}
    count = int(megabytes * 1_000_000 / len(orjson.dumps(item)))
    return {"items": [{**item, "id": i} for i in range(count)], "count": count}


async def test_a_five_megabyte_jsonb_document_arrives_as_json(database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE docs (id int PRIMARY KEY, body jsonb)")
    document = wide_document(5)
    async with capturing(database, servers, topic, [entity("docs")], max_request_size=BIG) as capture:
        execute(database, ("INSERT INTO docs VALUES (1, %s::jsonb)", [orjson.dumps(document).decode()]),
                "INSERT INTO docs VALUES (2, '{}')")
        first, second = await capture.events(2)
    assert properties(first)["body"] == document
    assert properties(second) == {"id": 2, "body": {}}


@pytest.mark.parametrize("depth", [
    300,
    2000,
])
async def test_deeply_nested_jsonb_arrives_and_the_stream_goes_on(
        database: str, servers: Servers, topic: str, depth: int) -> None:
    execute(database, "CREATE TABLE docs (id int PRIMARY KEY, body jsonb)")
    deep = "[" * depth + "]" * depth
    async with capturing(database, servers, topic, [entity("docs")]) as capture:
        execute(database, ("INSERT INTO docs VALUES (1, %s::jsonb)", [deep]), "INSERT INTO docs VALUES (2, '[]')")
        records = await capture.records(2, timeout=10)
    # Deeper than orjson reads or writes (1024 / 255 levels): the text Postgres sent is embedded as it is.
    # The two rows are two entities: the order they are read in is not promised.
    (deep_record,) = [record for record in records if b'"body":' + deep.encode() + b"}" in record]
    (other,) = [record for record in records if record is not deep_record]
    assert properties(orjson.loads(other)) == {"id": 2, "body": []}


TEN_MB = 10 * 1024 * 1024


async def test_a_ten_megabyte_value_arrives_when_kafka_allows_it(database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE docs (id int PRIMARY KEY, body text)")
    async with capturing(database, servers, topic, [entity("docs")], max_request_size=BIG) as capture:
        execute(database, f"INSERT INTO docs VALUES (1, repeat('x', {TEN_MB}))", "INSERT INTO docs VALUES (2, 'b')")
        first, second = await capture.events(2)
    assert properties(first)["body"] == "x" * TEN_MB
    assert properties(second)["body"] == "b"


async def test_a_ten_megabyte_value_over_the_limit_is_dead_lettered_and_the_stream_goes_on(
        database: str, servers: Servers, topic: str) -> None:
    # With on_refused_event = "stop" the stream stops naming the event: test_cdc_features covers that.
    execute(database, "CREATE TABLE docs (id int PRIMARY KEY, body text)")
    dead = f"{topic}.dead"
    async with capturing(database, servers, topic, [entity("docs")], dead_letter_topic=dead) as capture:
        execute(database, f"INSERT INTO docs VALUES (1, repeat('x', {TEN_MB}))",
                "INSERT INTO docs VALUES (2, 'after')",
                "UPDATE docs SET body = 'small' WHERE id = 1",  # its oldValue (REPLICA IDENTITY FULL) is the 10 MB
                "UPDATE docs SET body = 'smaller' WHERE id = 1")
        events = await capture.events(2)
        refused = await capture.events(2, topic=dead)
    assert [(e["entityPath"], e["operationType"]) for e in events] == [("rows/2", "created"), ("rows/1", "updated")]
    assert properties(events[1]) == {"id": 1, "body": "smaller"}
    assert [(r["entityPath"], r["operationType"]) for r in refused] == [("rows/1", "created"), ("rows/1", "updated")]
    assert all(r["size"] > TEN_MB and "MessageSizeTooLarge" in r["reason"] for r in refused)


@pytest.fixture
def sql_ascii_database(servers: Servers) -> Iterator[str]:
    """A database that stores whatever bytes it is given: text that is not UTF-8 reaches the stream."""
    name = f"t_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    params = conninfo_to_dict(servers.admin_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        _drop_slots(conn, name)
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


NOT_UTF8 = "INSERT INTO notes VALUES (1, convert_from('\\xff'::bytea, 'SQL_ASCII'))"


async def test_a_row_that_cannot_be_converted_stops_the_stream_naming_table_and_column(
        sql_ascii_database: str, servers: Servers, topic: str, row_path: str) -> None:
    execute(sql_ascii_database, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
    async with capturing(sql_ascii_database, servers, topic, [entity("notes")], row_path=row_path,
                         on_refused_event="stop") as capture:
        execute(sql_ascii_database, NOT_UTF8)
        with pytest.raises(MappingError, match=r"public\.notes\.body \(type oid 25\): cannot convert"):
            await capture.events(1, timeout=10)


async def test_a_row_that_cannot_be_converted_is_dead_lettered_and_the_stream_goes_on(
        sql_ascii_database: str, servers: Servers, topic: str, row_path: str) -> None:
    execute(sql_ascii_database, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
    dead = f"{topic}.dead"
    async with capturing(sql_ascii_database, servers, topic, [entity("notes")], row_path=row_path,
                         dead_letter_topic=dead) as capture:
        execute(sql_ascii_database, NOT_UTF8, "INSERT INTO notes VALUES (2, 'fine')")
        (event,) = await capture.events(1)
        (refused,) = await capture.events(1, topic=dead)
    assert properties(event) == {"id": 2, "body": "fine"}
    assert refused["table"] == "public.notes" and refused["operationType"] == "created"
    assert "public.notes.body" in refused["reason"] and "utf-8" in refused["reason"]
    assert refused["eventId"].startswith("evt_") and refused["transaction"]["index"] == 0


# ---------------------------------------------------------------------------------------------- identifiers

async def test_mixed_case_quoted_and_unicode_identifiers(database: str, servers: Servers, topic: str,
                                                         row_path: str) -> None:
    execute(database, 'CREATE SCHEMA "Sales"',
            'CREATE TABLE "Sales"."Order Items" (id int PRIMARY KEY, "ünïcode col" text, "CamelCase" int, '
            '"Org Id" text)')
    orders = EntitySettings(table="Sales.Order Items", entity_key="orders/items", organization_column="Org Id",
                            entity_path="orders/{CamelCase}/items/{id}", collection_path="orders/{CamelCase}/items",
                            entity_id="{ünïcode col}-{id}")
    async with capturing(database, servers, topic, [orders], row_path=row_path) as capture:
        execute(database, """INSERT INTO "Sales"."Order Items" VALUES (1, 'ä', 7, 'acme')""",
                """UPDATE "Sales"."Order Items" SET "ünïcode col" = 'ö' WHERE id = 1""",
                """DELETE FROM "Sales"."Order Items" WHERE id = 1""")
        created, updated, deleted = await capture.events(3)
    assert properties(created) == {"id": 1, "ünïcode col": "ä", "CamelCase": 7, "Org Id": "acme"}
    assert (created["entityPath"], created["entityId"], created["collectionPath"], created["organizationId"]) == (
        "orders/7/items/1", "ä-1", "orders/7/items", "acme")
    assert updated["data"]["updateMask"] == ["ünïcode col"] and updated["entityId"] == "ö-1"
    assert deleted["data"]["oldValue"]["properties"]["ünïcode col"] == "ö"


# ---------------------------------------------------------------------------------------------- no primary key

async def test_a_table_without_primary_key_is_captured_with_full_identity(
        database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE audit (code text, org text, note text)")  # no key, duplicates allowed
    audit = entity("audit", path="audit/{code}", organization_column="org")
    async with capturing(database, servers, topic, [audit]) as capture:
        execute(database, "INSERT INTO audit VALUES ('a', 'acme', 'one'), ('a', 'acme', 'two')",
                "UPDATE audit SET note = 'three' WHERE note = 'two'", "DELETE FROM audit WHERE note = 'one'")
        events = await capture.events(4)
    assert [(e["operationType"], e["entityPath"]) for e in events] == [
        ("created", "audit/a"), ("created", "audit/a"), ("updated", "audit/a"), ("deleted", "audit/a")]
    assert events[2]["data"]["oldValue"]["properties"] == {"code": "a", "org": "acme", "note": "two"}
    assert events[2]["data"]["updateMask"] == ["note"]
    assert events[3]["data"]["oldValue"]["properties"] == {"code": "a", "org": "acme", "note": "one"}


async def test_a_table_without_identity_is_refused_when_walhook_may_not_set_it(
        database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE audit (code text, org text, note text)", "INSERT INTO audit VALUES ('a', 'x', 'y')")
    source = SourceSettings(dsn=database, set_replica_identity_full=False)
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic)
    with pytest.raises(SourceError, match=r"audit has no replica identity .*REPLICA IDENTITY FULL"):
        await run_capture(source, kafka, [entity("audit", path="audit/{code}")], asyncio.Event())
    execute(database, "UPDATE audit SET note = 'z'")  # the application's writes still work: it was not published
