"""Records the publisher cannot deliver: foreign or corrupt records, and events of no organization.

A record of the events topic that is not a walhook event (not JSON, not an object, a field the
publisher needs missing or of the wrong type) goes to the dead-letter topic: its original key,
value and headers, plus ``walhook-dead-letter-reason``, ``-topic``, ``-partition`` and ``-offset``
headers. Its offset is committed with the batch like any other, but only once the dead letter
is written: a failed write is retried, never skipped, so a bad record cannot block its
partition and cannot vanish either.

An event whose ``organizationId`` is null is a walhook event that no integration can receive;
it is logged (rate-limited), not dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from models.headers import DEAD_LETTER_PREFIX
from models.logs import ids
from models.settings import KafkaSettings
from publisher.routing.recipients import EventFields

log = logging.getLogger("walhook.publisher")

HEADER_PREFIX = DEAD_LETTER_PREFIX
TRUNCATED_VALUE_BYTES = 64 * 1024  # what is kept of a value the dead-letter topic refuses whole
_HEADROOM = 64 * 1024  # our headers on top of a record the events topic accepted


def dead_letter_headers(record: ConsumerRecord[bytes, bytes], reason: str) -> list[tuple[str, bytes]]:
    """The record's own headers, then ours naming the reason and where it came from."""
    return [*(record.headers or ()),
            (HEADER_PREFIX + "reason", reason.encode()),
            (HEADER_PREFIX + "topic", record.topic.encode()),
            (HEADER_PREFIX + "partition", str(record.partition).encode()),
            (HEADER_PREFIX + "offset", str(record.offset).encode())]


class DeadLetters:
    """Writes bad records to the dead-letter topic; ``flush`` returns only once all are written."""

    def __init__(self, kafka: KafkaSettings, topic: str, retry_seconds: float = 1.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.written = 0
        self._retry_seconds = retry_seconds
        self._pending: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        self._producer: AIOKafkaProducer | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """Queue ``record`` for the dead-letter topic (written by the next ``flush``)."""
        log.error("record %s/%d@%d is not a walhook event (%s); it goes to %s", record.topic, record.partition,
                  record.offset, reason, self.topic)
        self._pending.append((record, reason))

    async def flush(self) -> None:
        """Write every queued record, retrying until Kafka has them all: the caller commits offsets after."""
        while self._pending:
            try:
                await self._write_pending()
            except KafkaError as exc:
                log.error("cannot write %d record(s) to dead-letter topic %s, retrying (their offsets are not "
                          "committed meanwhile): %r", len(self._pending), self.topic, exc)
                await self._close_producer()  # a fresh connection next time
                await asyncio.sleep(self._retry_seconds)

    async def close(self) -> None:
        await self._close_producer()

    async def _write_pending(self) -> None:
        producer = await self._open()
        results = await asyncio.gather(*(self._write(producer, record, reason) for record, reason in self._pending),
                                       return_exceptions=True)
        failed = [(item, result) for item, result in zip(self._pending, results, strict=True)
                  if isinstance(result, BaseException)]
        self.written += len(self._pending) - len(failed)
        self._pending = [item for item, _ in failed]
        for _, error in failed:
            if not isinstance(error, KafkaError):
                raise error
        if failed:
            raise failed[0][1]

    async def _write(self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        headers = dead_letter_headers(record, reason)
        try:
            await (await producer.send(self.topic, key=record.key, value=record.value, headers=headers))
        except MessageSizeTooLargeError as exc:
            # Keep the start of the value rather than block the partition on a record no one can store.
            size = len(record.value or b"")
            log.error("record %s/%d@%d (%d bytes) is too large for %s (%s); keeping its first %d bytes",
                      record.topic, record.partition, record.offset, size, self.topic, exc, TRUNCATED_VALUE_BYTES)
            headers.append((HEADER_PREFIX + "truncated-from", str(size).encode()))
            value = (record.value or b"")[:TRUNCATED_VALUE_BYTES]
            await (await producer.send(self.topic, key=(record.key or b"")[:1024], value=value, headers=headers))

    async def _open(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap_servers, acks="all",
                                        max_request_size=self.kafka.max_request_size + _HEADROOM)
            try:
                await producer.start()
                await self._ensure_topic()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap_servers)
        try:
            await admin.start()
            if self.topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(self.topic, self.kafka.partitions, replication_factor=1)])
                log.info("created dead-letter topic %s", self.topic)
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class UnroutedLog:
    """Warns about events whose organizationId is null, once per entity key per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._seen: dict[str, tuple[float, int]] = {}  # entity key -> (last warning, events since)

    def note(self, fields: EventFields) -> None:
        """Count one event no integration receives; warn now if this key's interval has passed."""
        if fields.operation == "truncated":  # documented: a TRUNCATE belongs to no organization
            return
        now = time.monotonic()
        last, count = self._seen.get(fields.entity_key, (float("-inf"), 0))
        if now - last < self._interval:
            self._seen[fields.entity_key] = (last, count + 1)
            return
        self._seen[fields.entity_key] = (now, 0)
        since = f" ({count} more {fields.entity_key} events like it since the last warning)" if count else ""
        log.warning("event %s (%s) has organizationId null: no integration receives it%s; check the table's "
                    "organization column", fields.event_id, fields.entity_path, since, extra=ids(event=fields.event_id))
