"""Where the publishers' consumer group stands: the catch-up of a disabled integration starts there.

When an integration is disabled, the group's committed offsets are taken first: every record
before them was consumed - and its deliveries recorded - while the integration was still
enabled, and every record a publisher consumes without recording (having seen the disable) lies
after them. Enabling replays from there, so nothing is skipped however far the consumers lagged
behind the writers. Where the offsets cannot be had, the catch-up falls back to the moment of
the disable.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from models.settings import KafkaSettings
from publisher.errors import PublisherError

log = logging.getLogger("walhook.publisher")


async def committed_positions(kafka: KafkaSettings | None) -> dict[int, int] | None:
    """Where the consumer group stands in every partition of the events topic; None when unknown.

    A partition the group never committed in stands at its first record: the publishers read
    such a partition from the earliest offset, so none of its records has been consumed yet.

    Asked through a consumer of the group that joins nothing (no rebalance): the bundled broker
    drops the connection on the admin client's offset fetch, and a consumer's works on both.
    """
    if kafka is None:
        return None
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.consumer_group,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = await partitions_of(consumer, kafka.topic)
        first = await consumer.beginning_offsets(partitions)
        positions = {}
        for partition in partitions:
            offset = await consumer.committed(partition)
            positions[partition.partition] = offset if offset is not None and offset >= 0 else first[partition]
        return positions
    except (KafkaError, OSError, PublisherError) as exc:
        log.warning("cannot read the consumer group's offsets (the catch-up will start from the time instead): "
                    "%s", exc)
        return None
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions; metadata for a topic arrives shortly after the first request."""
    for _ in range(50):
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            return [TopicPartition(topic, number) for number in sorted(numbers)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise PublisherError(f"topic {topic!r} has no partitions (does it exist?)")
