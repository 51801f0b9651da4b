"""The events topic gets the configured partition count whichever process reaches Kafka first.

Starting the capture, the publisher and the API together once left a topic of 4 partitions where
6 were configured: the publisher's consumer asked for the topic's metadata first, and the broker
created it with its own default. Now every process creates it first, and one whose count differs
is named by a warning at start and by ``walhook status``.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from control.status import group_lag
from models.settings import KafkaSettings, PublisherSettings
from models.topics import ensure_topic, partition_count
from publisher.sending.sender import WebhookSender
from publisher.service import Publisher
from publisher.store import Store
from tests.conftest import Servers
from tests.test_delivery import FAST, until_joined
from walhook.cli.status import render


async def partitions_of(servers: Servers, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.bootstrap_servers)
    await admin.start()
    try:
        return await partition_count(admin, topic)
    finally:
        await admin.close()


async def test_a_publisher_started_first_creates_the_topic_with_the_configured_partitions(
        servers: Servers, database: str, topic: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=5,
                          consumer_group=f"{topic}.g")
    async with Store(database) as store, WebhookSender(2.0) as sender:
        publisher = Publisher(kafka, PublisherSettings(**FAST), store, sender)
        stop = asyncio.Event()
        running = asyncio.create_task(publisher.run(stop))
        try:
            await until_joined(servers, kafka.consumer_group, running)
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
    assert await partitions_of(servers, topic) == 5


async def test_a_topic_with_another_partition_count_is_named(servers: Servers, topic: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    await ensure_topic(KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=3))
    configured = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=6,
                               consumer_group=f"{topic}.g")
    with caplog.at_level(logging.WARNING, "walhook"):
        await ensure_topic(configured)
    assert f"topic {topic} has 3 partitions, not the 6 of [kafka] partitions" in caplog.text
    lines = render({"at": "now", "slot": None, "consumer_group": await group_lag(configured), "integrations": [],
                    "replay_jobs": [], "delivery_log": {"total_bytes": 0, "deliveries_bytes": 0, "deliveries_rows": 0,
                                                        "attempts_bytes": 0, "attempts_rows": 0,
                                                        "attempt_partitions": 0}})
    assert any(line.strip().startswith(f"warning: topic {topic} has 3 partitions") for line in lines)
