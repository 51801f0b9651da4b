"""Replay: deliver an integration's events again, read back from Kafka.

Kafka keeps the events, so replay needs no copy of them in the store: it reads the topic
from an offset (per partition) or from a point in time (``offsets_for_times``), keeps the
events the integration subscribes to, and schedules them (trigger ``replay``). The running
publishers deliver them; each keeps its ``webhook-id``, so receivers can deduplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from models.settings import KafkaSettings
from publisher.errors import PublisherError
from publisher.matching import matches_any
from publisher.service import webhook_id
from publisher.store import Integration, NewDelivery, Store


@dataclass(frozen=True)
class ReplayStart:
    """Where a replay begins: one offset for every partition, or a moment in time."""

    offset: int | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if (self.offset is None) == (self.since is None):
            raise ValueError("give either an offset or a time to replay from")


async def replay(store: Store, kafka: KafkaSettings, integration: Integration, start: ReplayStart,
                 idle_seconds: float = 1.5) -> list[dict[str, Any]]:
    """Schedule the integration's events from ``start`` to the end of the topic; returns what was scheduled.

    The end is where the topic goes quiet for ``idle_seconds`` (the local broker's end offsets
    count batches, not records, so they cannot mark the end).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                                group_id=None, fetch_max_wait_ms=kafka.fetch_max_wait_ms)
    try:
        await consumer.start()
        partitions = await _seek(consumer, kafka.topic, start)
        scheduled: list[dict[str, Any]] = []
        while partitions:
            batch = await consumer.getmany(timeout_ms=int(idle_seconds * 1000), max_records=1000)
            if not batch:
                break
            chosen = [d for records in batch.values() for record in records
                      if (d := _delivery_for(integration, record.value or b"", record.partition, record.offset))]
            scheduled += await store.schedule_replay(chosen)
        return scheduled
    except KafkaError as exc:
        raise PublisherError(f"replay from {kafka.topic} failed: {exc}") from exc
    finally:
        await consumer.stop()


async def _seek(consumer: AIOKafkaConsumer, topic: str, start: ReplayStart) -> list[TopicPartition]:
    for _ in range(50):  # metadata for a topic arrives shortly after the first request
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            break
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    else:
        raise PublisherError(f"topic {topic!r} has no partitions (does it exist?)")
    partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
    consumer.assign(partitions)
    if start.offset is not None:
        for partition in partitions:
            consumer.seek(partition, start.offset)
        return partitions
    assert start.since is not None
    found = await consumer.offsets_for_times({p: int(start.since.timestamp() * 1000) for p in partitions})
    active = [p for p in partitions if found.get(p) is not None]
    for partition in active:
        consumer.seek(partition, found[partition].offset)  # type: ignore[union-attr]
    return active


def _delivery_for(integration: Integration, body: bytes, partition: int, offset: int) -> NewDelivery | None:
    try:
        event = orjson.loads(body)
        event_id, organization = event["eventId"], event["organizationId"]
        entity_key, operation, path = event["entityKey"], event["operationType"], event["entityPath"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if organization != integration.organization_id or not matches_any(integration.subscriptions, entity_key,
                                                                       operation):
        return None
    return NewDelivery(integration.id, organization, event_id, webhook_id(event_id, integration.id), entity_key,
                       path, operation, body, partition, offset)
