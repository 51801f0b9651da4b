"""The Kafka writer: events out, acknowledgements back to the checkpoint.

Messages are keyed by organization and entity path, so every change of one entity lands
in one partition, in commit order. Values are the event's JSON (orjson); headers repeat
the fields a consumer filters on, so it need not parse the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from cdc.errors import KafkaWriteError
from models.settings import KafkaSettings

log = logging.getLogger("walhook.cdc")


def message_key(event: dict[str, Any]) -> bytes:
    return f"{event['organizationId'] or ''}|{event['entityPath']}".encode()


def message_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [
        ("walhook-event-id", event["eventId"].encode()),
        ("walhook-organization-id", (event["organizationId"] or "").encode()),
        ("walhook-entity-key", event["entityKey"].encode()),
        ("walhook-operation-type", event["operationType"].encode()),
    ]


async def ensure_topic(settings: KafkaSettings) -> None:
    """Create the events topic with ``settings.partitions`` partitions unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        if settings.topic in await admin.list_topics():
            return
        topic = NewTopic(settings.topic, num_partitions=settings.partitions, replication_factor=1)
        await admin.create_topics([topic])
        log.info("created topic %s with %d partitions", settings.topic, settings.partitions)
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        raise KafkaWriteError(f"cannot create topic {settings.topic!r} at {settings.bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()


class KafkaWriter:
    """Produces events with a bounded number in flight; the producer waits when it is full."""

    def __init__(self, settings: KafkaSettings, max_in_flight: int = 20_000) -> None:
        self._settings = settings
        self._slots = asyncio.Semaphore(max_in_flight)
        self._failure: BaseException | None = None
        self._producer: AIOKafkaProducer | None = None

    async def open(self) -> None:
        if self._producer is not None:
            return
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, acks=s.acks if s.acks == "all" else int(s.acks),
            linger_ms=s.linger_ms, max_batch_size=s.max_batch_size, enable_idempotence=s.enable_idempotence,
            compression_type=None if s.compression == "none" else s.compression,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise KafkaWriteError(f"cannot reach Kafka at {s.bootstrap_servers}: {exc}") from exc
        self._producer = producer

    async def close(self) -> None:
        """Flush what is in flight and stop. Idempotent."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(self, event: dict[str, Any], on_ack: Callable[[], None]) -> None:
        """Queue one event; ``on_ack`` runs once Kafka acknowledged it (acks per settings)."""
        self.raise_if_failed()
        await self._slots.acquire()
        assert self._producer is not None, "KafkaWriter.open() first"
        try:
            future = await self._producer.send(self._settings.topic, value=orjson.dumps(event),
                                               key=message_key(event), headers=message_headers(event))
        except KafkaError as exc:
            self._slots.release()
            raise KafkaWriteError(f"Kafka refused event {event['eventId']}: {exc}") from exc
        future.add_done_callback(lambda done: self._settle(done, event["eventId"], on_ack))

    def raise_if_failed(self) -> None:
        """Stop the stream if any earlier event was not acknowledged: never skip past it."""
        if self._failure is not None:
            raise KafkaWriteError(f"Kafka did not acknowledge an event: {self._failure}") from self._failure

    def _settle(self, done: asyncio.Future[Any], event_id: str, on_ack: Callable[[], None]) -> None:
        self._slots.release()
        if done.cancelled() or done.exception() is not None:
            self._failure = self._failure or done.exception() or asyncio.CancelledError(event_id)
            log.error("Kafka did not acknowledge %s: %s", event_id, self._failure)
            return
        on_ack()

    async def __aenter__(self) -> KafkaWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
