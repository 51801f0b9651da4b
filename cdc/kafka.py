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


def message_headers(event: dict[str, Any], environment: str | None = None) -> list[tuple[str, bytes]]:
    headers = [
        ("walhook-event-id", event["eventId"].encode()),
        ("walhook-organization-id", (event["organizationId"] or "").encode()),
        ("walhook-entity-key", event["entityKey"].encode()),
        ("walhook-operation-type", event["operationType"].encode()),
    ]
    if environment:
        headers.append(("walhook-environment", environment.encode()))
    return headers


def dead_letter_record(event: dict[str, Any], reason: str, size: int) -> bytes:
    """What the dead-letter topic keeps of an event Kafka refused: enough to find the row again."""
    fields = ("eventId", "eventTimestamp", "operationType", "entityKey", "entityPath", "entityId",
              "organizationId", "transaction")
    return orjson.dumps({**{name: event.get(name) for name in fields}, "reason": reason, "size": size})


async def ensure_topic(settings: KafkaSettings, topic: str | None = None) -> None:
    """Create ``topic`` (default: the events topic) with ``settings.partitions`` partitions unless it exists."""
    name = topic or settings.topic
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        if name in await admin.list_topics():
            return
        await admin.create_topics([NewTopic(name, num_partitions=settings.partitions, replication_factor=1)])
        log.info("created topic %s with %d partitions", name, settings.partitions)
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        raise KafkaWriteError(f"cannot create topic {name!r} at {settings.bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()


class KafkaWriter:
    """Produces events with a bounded number in flight; the producer waits when it is full.

    An event Kafka refuses for good (a non-retriable error, such as a message larger than
    ``max_request_size``) stops the stream with an error naming it - unless
    ``dead_letter_topic`` is set: then a record naming the event and the reason goes
    there, and the stream moves on. Retriable failures (broker unreachable) always stop the
    stream, so nothing is skipped while Kafka is merely down.
    """

    def __init__(self, settings: KafkaSettings, max_in_flight: int = 20_000, environment: str | None = None) -> None:
        self._settings = settings
        self._environment = environment
        self._slots = asyncio.Semaphore(max_in_flight)
        self._failure: BaseException | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending_dead_letters: set[asyncio.Future[None]] = set()

    async def open(self) -> None:
        if self._producer is not None:
            return
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, acks=s.acks if s.acks == "all" else int(s.acks),
            linger_ms=s.linger_ms, max_batch_size=s.max_batch_size, enable_idempotence=s.enable_idempotence,
            max_request_size=s.max_request_size,
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
            await self._producer.flush()
            if self._pending_dead_letters:
                await asyncio.gather(*self._pending_dead_letters, return_exceptions=True)
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(self, event: dict[str, Any], on_ack: Callable[[], None]) -> None:
        """Queue one event; ``on_ack`` runs once Kafka acknowledged it (acks per settings)."""
        self.raise_if_failed()
        await self._slots.acquire()
        assert self._producer is not None, "KafkaWriter.open() first"
        value = orjson.dumps(event)
        try:
            future = await self._producer.send(self._settings.topic, value=value, key=message_key(event),
                                               headers=message_headers(event, self._environment))
        except KafkaError as exc:
            self._slots.release()
            await self._refused(event, len(value), exc, on_ack)
            return
        future.add_done_callback(lambda done: self._settle(done, event, len(value), on_ack))

    def raise_if_failed(self) -> None:
        """Stop the stream if any earlier event was not acknowledged: never skip past it."""
        if self._failure is not None:
            raise KafkaWriteError(f"Kafka did not acknowledge an event: {self._failure}") from self._failure

    def _settle(self, done: asyncio.Future[Any], event: dict[str, Any], size: int,
                on_ack: Callable[[], None]) -> None:
        self._slots.release()
        if done.cancelled():
            self._failure = self._failure or asyncio.CancelledError(event["eventId"])
            return
        error = done.exception()
        if error is None:
            on_ack()
        elif isinstance(error, KafkaError) and not error.retriable and self._settings.dead_letter_topic:
            task = asyncio.ensure_future(self._dead_letter(event, size, error, on_ack))
            self._pending_dead_letters.add(task)
            task.add_done_callback(self._pending_dead_letters.discard)
        else:
            self._failure = self._failure or error
            log.error("Kafka did not acknowledge %s: %s", event["eventId"], error)

    async def _refused(self, event: dict[str, Any], size: int, error: KafkaError, on_ack: Callable[[], None]) -> None:
        if error.retriable or not self._settings.dead_letter_topic:
            raise KafkaWriteError(
                f"Kafka refused event {event['eventId']} ({event['entityPath']}, {size} bytes): {error!r}; "
                "set [kafka] dead_letter_topic to divert such events, or raise [kafka] max_request_size "
                "(and the broker's message.max.bytes)") from error
        await self._dead_letter(event, size, error, on_ack)

    async def _dead_letter(self, event: dict[str, Any], size: int, error: BaseException,
                           on_ack: Callable[[], None]) -> None:
        """Record the refused event on the dead-letter topic; it counts as acknowledged once that is."""
        assert self._producer is not None and self._settings.dead_letter_topic is not None
        reason = f"{type(error).__name__}: {error}"
        log.error("event %s (%s, %d bytes) refused by Kafka (%s); recorded on %s", event["eventId"],
                  event["entityPath"], size, reason, self._settings.dead_letter_topic)
        try:
            future = await self._producer.send(self._settings.dead_letter_topic, key=message_key(event),
                                               value=dead_letter_record(event, reason, size),
                                               headers=message_headers(event, self._environment))
            await future
        except KafkaError as exc:
            self._failure = self._failure or exc
            return
        on_ack()

    async def __aenter__(self) -> KafkaWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
