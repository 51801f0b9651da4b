"""The Kafka writer: events out, acknowledgements back to the checkpoint.

Messages are keyed by organization and entity path, so every change of one entity lands
in one partition, in commit order. Values are the event's JSON (orjson); headers repeat
the fields a consumer filters on, so it need not parse the body.

Events are appended to one open batch per partition (aiokafka's batch API) rather than
sent one by one: a send per event costs more than decoding and building the event. The
partition is the CRC-32 of the key modulo the topic's partition count - stable across
restarts, so an entity never changes partition while the topic keeps its size.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from cdc.errors import KafkaWriteError
from cdc.topics import ensure_topic as ensure_topic  # its home moved; importers of cdc.kafka keep working
from models.headers import ENTITY_KEY, ENTITY_PATH, ENVIRONMENT, EVENT_ID, OPERATION_TYPE, ORGANIZATION_ID
from models.logs import ids
from models.settings import KafkaSettings

log = logging.getLogger("walhook.cdc")

Acknowledge = Callable[[Any, int], None]
"""Called with (token, n) once Kafka acknowledged n events appended with that token."""

DEAD_LETTER_FIELDS = ("eventId", "eventTimestamp", "operationType", "entityKey", "entityPath", "entityId",
                      "organizationId", "transaction", "table")


def message_key(event: dict[str, Any]) -> bytes:
    return f"{event['organizationId'] or ''}|{event['entityPath']}".encode()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a key: the same key always lands in the same partition."""
    return zlib.crc32(key) % partitions


def message_headers(event: dict[str, Any], environment: str | None = None) -> list[tuple[str, bytes]]:
    headers = [
        (EVENT_ID, event["eventId"].encode()),
        (ORGANIZATION_ID, (event["organizationId"] or "").encode()),
        (ENTITY_KEY, event["entityKey"].encode()),
        (OPERATION_TYPE, event["operationType"].encode()),
        (ENTITY_PATH, event["entityPath"].encode()),
    ]
    if environment:
        headers.append((ENVIRONMENT, environment.encode()))
    return headers


def dead_letter_record(event: dict[str, Any], reason: str, size: int, table: str | None = None) -> bytes:
    """What the dead-letter topic keeps of a refused change: enough to find the row again, none of its values."""
    record = {name: event[name] for name in DEAD_LETTER_FIELDS if name in event}
    if table is not None:
        record.setdefault("table", table)
    return orjson.dumps({**record, "reason": reason, "size": size})


class _Batch:
    """One partition's open batch, and which tokens (transactions) its events belong to."""

    __slots__ = ("builder", "bytes", "count", "first_value", "opened", "partition", "runs")

    def __init__(self, builder: BatchBuilder, partition: int) -> None:
        self.builder = builder
        self.partition = partition
        self.runs: list[list[Any]] = []  # [token, events], in append order
        self.count = 0
        self.bytes = 0  # serialised values, for the writer's byte bound
        self.opened = time.monotonic()
        self.first_value: bytes | None = None  # the first event's JSON, named when a one-event batch is refused

    def append(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]], token: object) -> bool:
        """False when the batch is full (the event then opens the next batch)."""
        if self.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            return False
        runs = self.runs
        if runs and runs[-1][0] is token:
            runs[-1][1] += 1
        else:
            runs.append([token, 1])
        if not self.count:
            self.first_value = value
        self.count += 1
        return True


class KafkaWriter:
    """Produces events in per-partition batches, with a bounded number in flight.

    ``append`` is synchronous: it serialises one event into its partition's open batch.
    Full batches leave at the next ``send_ready``; so does every open batch once the oldest has
    lingered ``linger_ms``: the partitions share one cadence, one request per round. When the
    replication stream has nothing more buffered the pipeline calls ``send_due``, and lets what
    arrives meanwhile accumulate until the round is due: it is read then, and leaves with the round.
    A quiet stream is held back by ``linger_ms`` at most. ``send_ready`` and ``flush`` wait
    while ``max_in_flight`` events are unacknowledged: a fast database makes the reader
    wait instead of memory growing. One batch per partition is in flight at a time, so
    Kafka keeps each partition in append order.

    An event Kafka refuses for good (a non-retriable error, such as a message larger than
    ``max_request_size``) goes to the capture dead-letter topic as a record naming the event,
    its table and the reason, and the stream moves on; ``on_dead_letter`` is called once the
    record is written. With ``on_refused_event = "stop"`` such an event stops the stream with
    an error naming it instead. Retriable failures (broker unreachable) always stop the
    stream, so nothing is skipped while Kafka is merely down.

    ``max_in_flight_bytes`` bounds the serialised size of what is unacknowledged too, so a
    run of multi-megabyte rows cannot fill memory before ``max_in_flight`` is reached.
    """

    def __init__(self, settings: KafkaSettings, acknowledge: Acknowledge, max_in_flight: int = 20_000,
                 environment: str | None = None, on_dead_letter: Callable[[], None] | None = None,
                 tables: dict[str, str] | None = None, max_in_flight_bytes: int = 64 << 20) -> None:
        self._settings = settings
        self._acknowledge = acknowledge
        self._environment = environment
        self._max_in_flight = max_in_flight
        self._max_in_flight_bytes = max_in_flight_bytes
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._dead_letter_topic = settings.capture_dead_letter_topic
        self._on_dead_letter = on_dead_letter
        self._tables = tables or {}  # entity key -> table, for dead-letter records
        self._room = asyncio.Event()
        self._room.set()
        self._open_batches: dict[int, _Batch] = {}
        self._ready: list[_Batch] = []
        self._partitions = 0
        self._linger = settings.linger_ms / 1000
        self._failure: BaseException | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending_dead_letters: set[asyncio.Future[None]] = set()
        self._sending = asyncio.Lock()

    @property
    def in_flight(self) -> int:
        """Events appended and not yet acknowledged (or refused)."""
        return self._in_flight

    @property
    def in_flight_bytes(self) -> int:
        """Serialised size of the events appended and not yet acknowledged (or refused)."""
        return self._in_flight_bytes

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
            self._partitions = len(await producer.partitions_for(s.topic))
        except KafkaError as exc:
            await producer.stop()
            raise KafkaWriteError(f"cannot reach Kafka at {s.bootstrap_servers}: {exc}") from exc
        self._producer = producer

    async def close(self) -> None:
        """Send what is buffered, wait for every acknowledgement, and stop. Idempotent."""
        if self._producer is None:
            return
        try:
            if self._failure is None:
                await self.flush()
            await self._producer.flush()
            if self._pending_dead_letters:
                await asyncio.gather(*self._pending_dead_letters, return_exceptions=True)
        finally:
            producer, self._producer = self._producer, None
            await producer.stop()

    def append(self, event: dict[str, Any], token: object, extra_headers: list[tuple[str, bytes]] | None = None
               ) -> None:
        """Add one event to its partition's batch; ``acknowledge(token, n)`` follows once Kafka has it.

        ``extra_headers`` go after the usual ones (a backfill's rows name the backfill and its target)."""
        if self._failure is not None:
            self.raise_if_failed()
        try:
            value = orjson.dumps(event)
        except orjson.JSONEncodeError as exc:
            raise KafkaWriteError(f"cannot encode event {event['eventId']} ({event['entityPath']}) as JSON: "
                                  f"{exc}") from exc
        headers = message_headers(event, self._environment)
        if extra_headers:
            headers += extra_headers
        self.append_record(message_key(event), value, headers, token)

    def append_record(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]], token: object) -> None:
        """``append`` for an event already serialised (the compiled row path, ``cdc.rowpath``)."""
        if self._failure is not None:
            self.raise_if_failed()
        # Cheap length test first; the exact size (with record overhead) only for large events.
        if len(value) + len(key) + 512 > self._settings.max_request_size and self._refuse_oversized(
                key, value, headers, token):
            return
        partition = zlib.crc32(key) % self._partitions
        batch = self._open_batches.get(partition) or self._open(partition)
        if not batch.append(key, value, headers, token):
            self._ready.append(batch)
            batch = self._open(partition)
            batch.append(key, value, headers, token)  # an empty batch takes any size
        batch.bytes += len(value)
        self._in_flight += 1
        self._in_flight_bytes += len(value)
        if self._in_flight >= self._max_in_flight or self._in_flight_bytes >= self._max_in_flight_bytes:
            self._room.clear()

    async def send_ready(self) -> None:
        """Send full batches, and every open one once the oldest lingered ``linger_ms``; wait while too
        much is in flight."""
        if self._open_batches and self._linger_left() <= 0:
            self._ready.extend(self._open_batches.values())
            self._open_batches.clear()
        if not self._room.is_set():
            await self.flush()  # whatever waits in open batches must leave, or the room never comes
            await self._room.wait()
        elif self._ready:
            await self._send_ready()

    async def send_due(self) -> float | None:
        """For a stream with nothing more to read now: send what is due; returns the seconds until the
        open batches are (None: none is open, the stream may wait for more as long as it takes).

        The caller reads what arrived meanwhile *before* calling again, so it leaves with them: a
        change that arrives while a batch lingers waits for that batch only, not for the next one.
        """
        await self.send_ready()
        return max(0.0, self._linger_left()) if self._open_batches else None

    def _linger_left(self) -> float:
        return min(batch.opened for batch in self._open_batches.values()) + self._linger - time.monotonic()

    async def flush(self) -> None:
        """Send every open batch now (without waiting for acknowledgements)."""
        self._ready.extend(self._open_batches.values())
        self._open_batches.clear()
        await self._send_ready()

    def raise_if_failed(self) -> None:
        """Stop the stream if any earlier event was not acknowledged: never skip past it."""
        if self._failure is not None:
            raise KafkaWriteError(f"Kafka did not acknowledge an event: {self._failure}") from self._failure

    def _open(self, partition: int) -> _Batch:
        assert self._producer is not None, "KafkaWriter.open() first"
        batch = self._open_batches[partition] = _Batch(self._producer.create_batch(), partition)
        return batch

    async def _send_ready(self) -> None:
        async with self._sending:  # the stream and a backfill both send: one at a time keeps partition order
            await self._send_batches()

    async def _send_batches(self) -> None:
        assert self._producer is not None
        ready, self._ready = self._ready, []
        for batch in ready:
            batch.builder.close()
            try:
                future = await self._producer.send_batch(batch.builder, self._settings.topic,
                                                         partition=batch.partition)
            except KafkaError as exc:
                self._failure = self._failure or exc
                raise KafkaWriteError(f"cannot hand a batch to Kafka: {exc}") from exc
            future.add_done_callback(lambda done, batch=batch: self._settle(done, batch))

    def _settle(self, done: asyncio.Future[Any], batch: _Batch) -> None:
        self._in_flight -= batch.count
        self._in_flight_bytes -= batch.bytes
        if self._in_flight < self._max_in_flight and self._in_flight_bytes < self._max_in_flight_bytes:
            self._room.set()
        error = asyncio.CancelledError("batch cancelled") if done.cancelled() else done.exception()
        if error is None:
            for token, count in batch.runs:
                self._acknowledge(token, count)
        elif (isinstance(error, KafkaError) and not error.retriable and batch.count == 1
              and self._dead_letter_topic and batch.first_value is not None):
            self._start_dead_letter(orjson.loads(batch.first_value), batch.builder.size(), error, batch.runs[0][0])
        else:
            self._failure = self._failure or error
            first = orjson.loads(batch.first_value)["eventId"] if batch.first_value else "?"
            log.error("Kafka did not acknowledge %d event(s) from %s on: %s", batch.count, first, error)

    def _refuse_oversized(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]], token: object) -> bool:
        """True when the event is too large to send: it went to the dead-letter topic (or we raise)."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size <= self._settings.max_request_size:
            return False
        event = orjson.loads(value)  # rare: only to name the event
        error = MessageSizeTooLargeError(f"The message is {size} bytes when serialized, more than "
                                         f"max_request_size = {self._settings.max_request_size}")
        if not self._dead_letter_topic:
            raise KafkaWriteError(
                f"Kafka refused event {event['eventId']} ({event['entityPath']}, {size} bytes): {error!r}; "
                "set [kafka] on_refused_event = \"dead-letter\" to divert such events, or raise [kafka] "
                "max_request_size (and the topic's max.message.bytes)") from error
        self._start_dead_letter(event, size, error, token)
        return True

    def dead_letter(self, event: dict[str, Any], error: BaseException, token: object) -> None:
        """Divert a change that could not become an event; ``acknowledge(token, 1)`` once it is recorded."""
        if not self._dead_letter_topic:
            raise KafkaWriteError(f"no capture dead-letter topic for {event['eventId']} ([kafka] on_refused_event "
                                  f"= \"stop\"): {error}") from error
        self._start_dead_letter(event, 0, error, token)  # close() waits for it

    def _start_dead_letter(self, event: dict[str, Any], size: int, error: BaseException, token: object) -> None:
        task = asyncio.ensure_future(self._dead_letter(event, size, error, token))
        self._pending_dead_letters.add(task)
        task.add_done_callback(self._pending_dead_letters.discard)

    async def _dead_letter(self, event: dict[str, Any], size: int, error: BaseException, token: object) -> None:
        """Record the refused event on the dead-letter topic; it counts as acknowledged once that is."""
        assert self._producer is not None and self._dead_letter_topic is not None
        reason = f"{type(error).__name__}: {error}"
        table = self._tables.get(event["entityKey"])
        log.error("event %s (%s, %s, %s) not sent (%s); recorded on dead-letter topic %s", event["eventId"],
                  table or event.get("table") or event["entityKey"], event["entityPath"] or "-",
                  f"{size} bytes" if size else "not converted", reason, self._dead_letter_topic,
                  extra=ids(event.get("organizationId"), event=event["eventId"]))
        try:
            future = await self._producer.send(self._dead_letter_topic, key=message_key(event),
                                               value=dead_letter_record(event, reason, size, table),
                                               headers=message_headers(event, self._environment))
            await future
        except KafkaError as exc:
            self._failure = self._failure or exc
            return
        if self._on_dead_letter is not None:
            self._on_dead_letter()
        self._acknowledge(token, 1)

    async def __aenter__(self) -> KafkaWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
