"""The topics the capture writes to: created with a message limit that matches the producer's.

A topic walhook creates gets ``max.message.bytes`` = the largest batch the producer sends
(``KafkaSettings.max_message_bytes``), so that Apache Kafka accepts every event the producer
lets through; the broker-wide ``message.max.bytes`` (1 MiB by default) then does not matter for
it. For a topic that already exists walhook changes nothing, but warns when the topic's limit is
lower: larger events would be refused by the broker and go to the dead-letter topic. (The local
tansu broker stores the setting and reports it, but does not enforce it: there only the
producer's ``max_request_size`` limits an event.)
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from cdc.errors import KafkaWriteError
from models.settings import KafkaSettings

log = logging.getLogger("walhook.cdc")

MAX_MESSAGE_BYTES = "max.message.bytes"


async def ensure_topic(settings: KafkaSettings, topic: str | None = None) -> None:
    """Create ``topic`` (default: the events topic) with ``settings.partitions`` partitions unless it exists."""
    name = topic or settings.topic
    limit = settings.max_message_bytes
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        if name in await admin.list_topics():
            await _warn_if_smaller(admin, name, limit)
            return
        await admin.create_topics([NewTopic(name, num_partitions=settings.partitions, replication_factor=1,
                                            topic_configs={MAX_MESSAGE_BYTES: str(limit)})])
        log.info("created topic %s with %d partitions, %s = %d", name, settings.partitions, MAX_MESSAGE_BYTES, limit)
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        raise KafkaWriteError(f"cannot create topic {name!r} at {settings.bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()


async def topic_message_limit(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    """The topic's effective ``max.message.bytes``, or None when the broker does not say."""
    try:
        # Every config, not just the one: tansu drops the connection when DescribeConfigs names keys.
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except KafkaError as exc:
        log.debug("cannot read %s of topic %s: %r", MAX_MESSAGE_BYTES, topic, exc)
        return None
    return message_limit_of(responses)


def message_limit_of(responses: list[Any]) -> int | None:
    """``max.message.bytes`` from DescribeConfigs responses (tuples: resources, then config entries)."""
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == MAX_MESSAGE_BYTES and entry[1] is not None and str(entry[1]).isdigit():
                    return int(entry[1])
    return None


async def _warn_if_smaller(admin: AIOKafkaAdminClient, topic: str, limit: int) -> None:
    found = await topic_message_limit(admin, topic)
    if found is not None and found < limit:
        log.warning("topic %s accepts messages up to %d bytes (%s), less than the producer sends (%d): larger "
                    "events will be refused by the broker and dead-lettered; raise it with kafka-configs.sh "
                    "--alter --entity-type topics --entity-name %s --add-config %s=%d", topic, found,
                    MAX_MESSAGE_BYTES, limit, topic, MAX_MESSAGE_BYTES, limit)
