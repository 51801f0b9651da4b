"""The batching Kafka writer on a real broker: order per key, acknowledgements per token, bounded in flight;
and the topics it writes to, created with a message limit that matches the producer's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cdc.errors import KafkaWriteError
from cdc.kafka import KafkaWriter, ensure_topic, message_key, partition_for
from cdc.topics import topic_message_limit
from models.settings import KafkaSettings
from tests.conftest import Servers
from tests.test_capture import read_topic


def event(entity: int, seq: int, organization: str = "acme", size: int = 0) -> dict[str, object]:
    return {"eventId": f"evt_{entity}_{seq}", "organizationId": organization, "entityKey": "items",
            "entityPath": f"items/{entity}", "operationType": "updated", "seq": seq, "pad": "x" * size}


def test_a_key_always_maps_to_the_same_partition_and_keys_spread() -> None:
    keys = [message_key(event(n, 0)) for n in range(6000)]
    assert [partition_for(key, 6) for key in keys] == [partition_for(key, 6) for key in keys]
    spread = Counter(partition_for(key, 6) for key in keys)
    assert set(spread) == set(range(6)) and min(spread.values()) > 800


async def test_events_keep_their_order_per_key_and_every_token_is_acknowledged(servers: Servers,
                                                                             topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=3, linger_ms=5,
                             max_batch_size=16_384)
    await ensure_topic(settings)
    acknowledged: Counter[str] = Counter()
    tokens = [f"tx{n}" for n in range(40)]
    async with KafkaWriter(settings, lambda token, n: acknowledged.update({token: n}), max_in_flight=500) as writer:
        for seq in range(50):  # 50 rounds over 40 entities; each round is one "transaction"
            for entity in range(40):
                writer.append(event(entity, seq, size=200), tokens[seq % 40])
                assert writer.in_flight <= 500 + 1
            await writer.send_ready()
    assert sum(acknowledged.values()) == 2000 and writer.in_flight == 0
    assert acknowledged == Counter({token: 80 if n < 10 else 40 for n, token in enumerate(tokens)})
    seen: dict[str, list[int]] = defaultdict(list)
    for item in await read_topic(servers.bootstrap_servers, topic, expected=2000):
        seen[item["entityPath"]].append(item["seq"])
    assert all(seqs == list(range(50)) for seqs in seen.values()) and len(seen) == 40


async def test_a_quiet_stream_is_not_held_back_by_batching(servers: Servers, topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1, linger_ms=60_000)
    await ensure_topic(settings)
    acknowledged = asyncio.Event()
    async with KafkaWriter(settings, lambda token, n: acknowledged.set()) as writer:
        writer.append(event(1, 0), "tx")
        await writer.send_ready()  # linger not reached: nothing leaves yet
        await writer.flush()  # leaves now, whatever the linger
        await asyncio.wait_for(acknowledged.wait(), 10)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert dict(record.headers)["walhook-event-id"] == b"evt_1_0"


async def test_an_event_larger_than_max_request_size_is_refused_by_name(servers: Servers, topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1,
                             max_request_size=4096, on_refused_event="stop")
    await ensure_topic(settings)
    async with KafkaWriter(settings, lambda token, n: None) as writer:
        writer.append(event(1, 0, size=100), "tx")
        with pytest.raises(KafkaWriteError, match=r"refused event evt_2_0 \(items/2, \d+ bytes\)"):
            writer.append(event(2, 0, size=10_000), "tx")


async def test_open_batches_leave_together_once_the_oldest_lingered(servers: Servers, topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=3, linger_ms=300)
    await ensure_topic(settings)
    acknowledged: list[int] = []
    async with KafkaWriter(settings, lambda token, n: acknowledged.append(n)) as writer:
        assert await writer.send_due() is None  # nothing open: the stream may wait as long as it takes
        keys = {partition_for(message_key(event(n, 0)), 3): n for n in range(20)}  # one entity per partition
        writer.append(event(keys[0], 0), "tx")
        due_in = await writer.send_due()  # what the pipeline calls when nothing more is buffered
        assert due_in is not None and 0 < due_in <= 0.3 and writer.in_flight == 1
        await asyncio.sleep(due_in / 2)
        writer.append(event(keys[1], 0), "tx")  # two more partitions, half-way through the first batch's linger
        writer.append(event(keys[2], 0), "tx")
        rounds = 0
        while (due_in := await writer.send_due()) is not None:  # the pipeline lets changes accumulate meanwhile
            await asyncio.sleep(due_in)
            rounds += 1
        assert rounds == 1  # the later batches left with the first, in its round
        await writer.flush()  # waits for nothing: everything is in flight
    assert sorted(acknowledged) == [1, 1, 1] and writer.in_flight == 0


async def test_unacknowledged_bytes_are_bounded_as_well_as_events(servers: Servers, topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=3, linger_ms=0)
    await ensure_topic(settings)
    acknowledged: list[int] = []
    seen: list[int] = []
    async with KafkaWriter(settings, lambda token, n: acknowledged.append(n), max_in_flight_bytes=100_000) as writer:
        for entity in range(30):  # 30 events of 30 KB: 900 KB if nothing waited
            writer.append(event(entity, 0, size=30_000), "tx")
            await writer.send_ready()
            seen.append(writer.in_flight_bytes)
    assert max(seen) < 100_000 and sum(acknowledged) == 30 and writer.in_flight_bytes == 0


async def test_a_topic_walhook_creates_takes_the_producer_limit_as_max_message_bytes(
        servers: Servers, topic: str) -> None:
    settings = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=1)
    await ensure_topic(settings)
    assert settings.max_message_bytes == 8 << 20
    async with admin_client(servers) as admin:
        assert await topic_message_limit(admin, topic) == settings.max_message_bytes


async def test_an_existing_topic_with_a_smaller_limit_is_named_in_a_warning(
        servers: Servers, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    async with admin_client(servers) as admin:
        await admin.create_topics([NewTopic(topic, 6, 1, topic_configs={"max.message.bytes": "100000"})])
    with caplog.at_level(logging.WARNING, logger="walhook.cdc"):
        await ensure_topic(KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"topic {topic} accepts messages up to 100000 bytes" in warning and str(8 << 20) in warning


@contextlib.asynccontextmanager
async def admin_client(servers: Servers) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.bootstrap_servers)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()
