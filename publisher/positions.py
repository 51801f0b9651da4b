"""Where the publishers' consumer group stands: the catch-up of a disabled integration starts there.

When an integration is disabled, the group's committed offsets are taken first: every record
before them was consumed - and its deliveries recorded - while the integration was still
enabled, and every record a publisher consumes without recording (having seen the disable) lies
after them. Enabling replays from there, so nothing is skipped however far the consumers lagged
behind the writers. Where the offsets cannot be had, the catch-up falls back to the moment of
the disable.
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from models.settings import KafkaSettings

log = logging.getLogger("walhook.publisher")


async def committed_positions(kafka: KafkaSettings | None) -> dict[int, int] | None:
    """The consumer group's committed offset per partition of the events topic; None when unknown."""
    if kafka is None:
        return None
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(kafka.consumer_group)
        return {tp.partition: meta.offset for tp, meta in offsets.items()
                if tp.topic == kafka.topic and meta.offset >= 0}
    except (KafkaError, OSError) as exc:
        log.warning("cannot read the consumer group's offsets (the catch-up will start from the time instead): "
                    "%s", exc)
        return None
    finally:
        await admin.close()
