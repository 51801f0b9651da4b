"""Records that are not walhook events go to the dead-letter topic with the reason; they never block a partition.

A real publisher consumes a real topic on which garbage, a JSON array, events with a field missing
or of the wrong type sit between valid events of the same entity (so, in the same partition). The
valid events must reach the receiver, in order; each bad record must be on the dead-letter topic
with its original key, value and headers and ``walhook-dead-letter-*`` headers naming the reason
and where it came from; and the group's committed offsets must be past all of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from models.settings import KafkaSettings, PublisherSettings
from publisher.deadletter import TRUNCATED_VALUE_BYTES, DeadLetters
from publisher.errors import NotAnEvent, PublisherError
from publisher.routing.recipients import parse_event
from publisher.sending.sender import WebhookSender
from publisher.service import Publisher
from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import ScriptedReceiver
from tests.test_delivery import event, org_with, produce, publishing, until

KEY = b"acme|docs/1"  # every record on one key: one partition, behind and ahead of the bad ones


@dataclass(frozen=True)
class Raw:
    value: bytes | None
    reason: str = ""  # expected in the reason header; empty for a valid event
    headers: tuple[tuple[str, bytes], ...] = ()


def without(name: str, n: int) -> bytes:
    body = event(n)
    del body[name]
    return orjson.dumps(body)


def with_field(name: str, value: object, n: int) -> bytes:
    return orjson.dumps({**event(n), name: value})


RECORDS = [
    Raw(orjson.dumps(event(1, seq=1))),
    Raw(b"\xff\x00 definitely not json", "not JSON", (("origin", b"legacy-system"),)),
    Raw(b"[1, 2, 3]", "not a JSON object but an array"),
    Raw(without("organizationId", 2), "missing field organizationId"),
    Raw(with_field("eventId", 42, 3), "field eventId is a number, not a string"),
    Raw(with_field("entityPath", "docs/\u00001", 4), "field entityPath contains a NUL character"),
    Raw(with_field("entityKey", ["docs"], 5), "field entityKey is an array, not a string"),
    Raw(None, "empty value"),  # a tombstone
    Raw(orjson.dumps(event(6, seq=2))),
    Raw(with_field("organizationId", None, 7)),  # a walhook event of no organization: logged, not dead-lettered
    Raw(with_field("organizationId", None, 8)),
    Raw(orjson.dumps(event(9, seq=3))),
]
BAD = [raw for raw in RECORDS if raw.reason]


async def produce_raw(servers: Servers, topic: str, records: list[Raw]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for raw in records:
            await producer.send_and_wait(topic, raw.value, key=KEY, headers=list(raw.headers))
    finally:
        await producer.stop()


async def read_records(servers: Servers, topic: str, expected: int, timeout: float = 60.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` (at least ``expected``), with keys and headers."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers.bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def committed_offset(servers: Servers, group: str, topic: str, partition: int) -> int | None:
    """The group's committed offset (a consumer that joins nothing: it only asks the coordinator)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers.bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()


async def test_bad_records_are_dead_lettered_and_valid_ones_delivered(
        servers: Servers, database: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="walhook.publisher")
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, _), \
            publishing(servers, topic, store) as publisher:
        await produce_raw(servers, topic, RECORDS)
        await until(lambda: len(receiver.verified("hook")) == 3 and publisher.dead_letters.written == len(BAD))
        dead = await read_records(servers, f"{topic}.dead-letter", expected=len(BAD))
    delivered = [hit.event["data"]["value"]["properties"]["seq"] for hit in receiver.verified("hook") if hit.event]
    assert delivered == [1, 2, 3]  # the valid events around the bad ones, in order

    assert [record.value for record in dead] == [raw.value for raw in BAD]
    for record, raw in zip(dead, BAD, strict=True):
        headers = dict(record.headers)
        assert record.key == KEY
        assert raw.reason in headers["walhook-dead-letter-reason"].decode()
        assert headers["walhook-dead-letter-topic"] == topic.encode()
        assert all(headers[name] == value for name, value in raw.headers)  # the original headers are kept
    offsets = [int(dict(record.headers)["walhook-dead-letter-offset"]) for record in dead]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(BAD)
    (partition,) = {int(dict(record.headers)["walhook-dead-letter-partition"]) for record in dead}
    # committed past every record, the bad ones included
    assert await committed_offset(servers, f"{topic}.g", topic, partition) == len(RECORDS)

    unrouted = [r for r in caplog.records if "organizationId null" in r.getMessage()]
    assert len(unrouted) == 1  # two such events, one warning: rate-limited per entity key


async def test_a_dead_letter_is_not_dropped_while_kafka_is_unreachable() -> None:
    letters = DeadLetters(KafkaSettings(bootstrap_servers="127.0.0.1:9", topic="t"), "t.dead-letter",
                          retry_seconds=0.2)
    letters.add(_record(b"garbage"), "not JSON")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(letters.flush(), 3)  # flush returns only once written: the offset stays uncommitted
    assert letters.pending == 1 and letters.written == 0
    await letters.close()


async def test_a_record_too_large_for_the_dead_letter_topic_is_kept_truncated(servers: Servers, topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1,
                          max_request_size=1024)
    letters = DeadLetters(kafka, f"{topic}.dead-letter")
    big = b"x" * (200 * 1024)
    letters.add(_record(big), "not JSON")
    try:
        await asyncio.wait_for(letters.flush(), 20)
    finally:
        await letters.close()
    (record,) = await read_records(servers, f"{topic}.dead-letter", expected=1)
    headers = dict(record.headers)
    assert record.value == big[:TRUNCATED_VALUE_BYTES]
    assert headers["walhook-dead-letter-truncated-from"] == str(len(big)).encode()
    assert headers["walhook-dead-letter-reason"] == b"not JSON"


def test_the_dead_letter_topic_must_not_be_the_events_topic() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9", topic="events")
    with pytest.raises(PublisherError, match="dead_letter_topic must differ"):
        Publisher(kafka, PublisherSettings(dead_letter_topic="events"), Store("postgresql://x"), WebhookSender())
    default = Publisher(kafka, PublisherSettings(), Store("postgresql://x"), WebhookSender())
    assert default.dead_letters.topic == "events.dead-letter"


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty value"), (b"{", "not JSON"), (b'"text"', "not a JSON object but a string"),
    (b"null", "not a JSON object but null"), (with_field("eventId", "", 1), "field eventId is empty"),
    (with_field("operationType", None, 1), "field operationType is null, not a string"),
])
def test_reasons_name_the_problem(value: bytes, reason: str) -> None:
    with pytest.raises(NotAnEvent, match=reason):
        parse_event(value)


def _record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="t", partition=0, offset=7, timestamp=0, timestamp_type=0, key=b"k", value=value,
                          checksum=None, serialized_key_size=1, serialized_value_size=len(value), headers=[])


def test_an_event_nested_deeper_than_the_parser_reads_is_routed_by_its_headers() -> None:
    deep = b'{"eventId": "evt_1", "data": {"value": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    headers = [("walhook-event-id", b"evt_1"), ("walhook-organization-id", b"acme"),
               ("walhook-entity-key", b"docs"), ("walhook-operation-type", b"created"),
               ("walhook-entity-path", b"docs/1")]
    fields = parse_event(deep, headers)
    assert (fields.event_id, fields.organization_id, fields.entity_path) == ("evt_1", "acme", "docs/1")
    with pytest.raises(NotAnEvent, match="depth limit"):  # a foreign record without our headers stays refused
        parse_event(deep, headers[:4])


async def test_a_clean_stop_commits_past_everything_it_logged(servers: Servers, database: str, topic: str) -> None:
    """The consume loop's last commit came before the dispatcher's closing flush logged the last attempts:
    a clean stop left their records uncommitted, and the next publisher sent them again."""
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, _):
        async with publishing(servers, topic, store) as publisher:
            assert publisher.dispatcher is not None
            publisher.dispatcher.recorder._interval = 3600  # attempts are logged by the stop's last flush only
            await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in (1, 2, 3)])
            await until(lambda: len(receiver.verified("hook")) == 3)
        committed = [await committed_offset(servers, f"{topic}.g", topic, partition) for partition in (0, 1)]
    assert sum(offset or 0 for offset in committed) == 3, committed
