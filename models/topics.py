"""The events topic (and the dead-letter topics): created with the configured partitions and a message
limit that matches the producer's, by whichever process reaches Kafka first.

Every process that uses the topic (capture, publisher) creates it before anything else touches it:
a consumer's first metadata request would otherwise let the broker create it with its own default
partition count (aiokafka always asks for that), and the configured count would be lost. A topic
that exists with another count is left as it is, with a warning.

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

from models.errors import WalhookError
from models.settings import KafkaSettings

log = logging.getLogger("walhook.cdc")

MAX_MESSAGE_BYTES = "max.message.bytes"


class TopicError(WalhookError):
    """Kafka could not be asked about the topic, or refused to create it."""


async def ensure_topic(settings: KafkaSettings, topic: str | None = None) -> None:
    """Create ``topic`` (default: the events topic) with ``settings.partitions`` partitions unless it exists."""
    name = topic or settings.topic
    limit = settings.max_message_bytes
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        if name in await admin.list_topics():
            await _warn_if_smaller(admin, name, limit)
            if topic is None:
                await warn_if_partitions_differ(admin, settings)
            return
        await admin.create_topics([NewTopic(name, num_partitions=settings.partitions, replication_factor=1,
                                            topic_configs={MAX_MESSAGE_BYTES: str(limit)})])
        log.info("created topic %s with %d partitions, %s = %d", name, settings.partitions, MAX_MESSAGE_BYTES, limit)
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        raise TopicError(f"cannot create topic {name!r} at {settings.bootstrap_servers}: {exc}") from exc
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


async def partition_count(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    """How many partitions ``topic`` has, or None when the broker does not say."""
    try:
        described = await admin.describe_topics([topic])
    except KafkaError as exc:
        log.debug("cannot describe topic %s: %r", topic, exc)
        return None
    for item in described:
        if item.get("topic") == topic and not item.get("error_code"):
            return len(item.get("partitions") or [])
    return None


def partitions_note(topic: str, found: int | None, configured: int) -> str | None:
    """One line when the topic's partition count is not the configured one, else None."""
    if found is None or found == configured:
        return None
    return (f"topic {topic} has {found} partitions, not the {configured} of [kafka] partitions: walhook does not "
            f"change an existing topic (add partitions with kafka-topics.sh --alter, or set partitions = {found})")


async def warn_if_partitions_differ(admin: AIOKafkaAdminClient, settings: KafkaSettings) -> None:
    note = partitions_note(settings.topic, await partition_count(admin, settings.topic), settings.partitions)
    if note is not None:
        log.warning("%s", note)
