"""``walhook dead-letters list``: what the capture and the publisher set aside, read back from Kafka.

Two topics hold dead letters (see *Dead letters* in docs/guides/operating.md): the capture's (``[kafka]
dead_letter_topic``, a JSON record per change it could not send: reason, event id, table,
entity path, size, never the row's values) and the publisher's (``[publisher]
dead_letter_topic``, the foreign record itself with ``walhook-dead-letter-*`` headers). A record
is recognised by its form, not by the topic it is on, so the two may share a topic.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from models.errors import WalhookError
from models.headers import DEAD_LETTER_PREFIX, ENTITY_PATH, EVENT_ID
from models.settings import KafkaSettings, PublisherSettings

PUBLISHER_HEADER = DEAD_LETTER_PREFIX


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, whichever half wrote it."""

    time: str
    source: str  # "capture" or "publisher"
    reason: str
    event_id: str | None
    table: str | None
    entity_path: str | None
    size: int | None
    topic: str
    partition: int
    offset: int


def dead_letter_of(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    """The summary of one record of a dead-letter topic (pure; an unreadable record says so)."""
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
    at = datetime.fromtimestamp(record.timestamp / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = {"time": at, "topic": record.topic, "partition": record.partition, "offset": record.offset}
    if PUBLISHER_HEADER + "reason" in headers:
        size = headers.get(PUBLISHER_HEADER + "truncated-from")
        return DeadLetter(source="publisher", reason=headers[PUBLISHER_HEADER + "reason"],
                          event_id=headers.get(EVENT_ID), table=None,
                          entity_path=headers.get(ENTITY_PATH),
                          size=int(size) if size and size.isdigit() else len(record.value or b""), **where)
    fields = _capture_fields(record.value)
    return DeadLetter(source="capture", reason=str(fields.get("reason", "unreadable dead-letter record")),
                      event_id=fields.get("eventId"), table=fields.get("table") or fields.get("entityKey"),
                      entity_path=fields.get("entityPath") or None, size=fields.get("size"), **where)


def _capture_fields(value: bytes | None) -> dict[str, Any]:
    try:
        fields = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return {"reason": f"unreadable dead-letter record: {exc}"}
    return fields if isinstance(fields, dict) else {"reason": "unreadable dead-letter record: not a JSON object"}


def dead_letter_topics(kafka: KafkaSettings, publisher: PublisherSettings) -> list[str]:
    """The capture's and the publisher's dead-letter topics (once, if they are the same)."""
    return list(dict.fromkeys([kafka.capture_dead_letter_topic_name, publisher.dead_letter_topic_for(kafka)]))


async def read_dead_letters(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> list[DeadLetter]:
    """Every record of ``topic``, summarised; an empty list when the topic does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, n) for n in sorted(await _partitions(consumer, topic))]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await asyncio.wait_for(_read_to_end(consumer, partitions), timeout)
    except KafkaError as exc:
        raise WalhookError(f"cannot read dead-letter topic {topic!r} at {kafka.bootstrap_servers}: {exc}") from exc
    except TimeoutError as exc:
        raise WalhookError(f"reading dead-letter topic {topic!r} took more than {timeout:.0f}s") from exc
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    if topic not in await consumer.topics():
        return set()
    return consumer.partitions_for_topic(topic) or set()


async def _read_to_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> list[DeadLetter]:
    """Read until every partition reached the end offset taken at the start.

    Some brokers (the local tansu) answer end offsets with the last batch's base offset + 1; a
    position at or past it still means the last batch was read, since a batch arrives whole.
    """
    ends = await consumer.end_offsets(partitions)
    found: list[DeadLetter] = []
    while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            found.extend(dead_letter_of(record) for record in records)
    return found


def render(letters: list[DeadLetter]) -> str:
    """One line per dead letter, oldest first; the reason last, as it may be long."""
    lines = [f"{'TIME':<20} {'SOURCE':<9} {'SIZE':>10} {'EVENT ID':<32} {'TABLE':<20} {'ENTITY PATH':<30} REASON"]
    for letter in letters:
        lines.append(f"{letter.time:<20} {letter.source:<9} {_or_dash(letter.size):>10} "
                     f"{_or_dash(letter.event_id):<32} {_or_dash(letter.table):<20} "
                     f"{_or_dash(letter.entity_path):<30} {letter.reason}")
    return "\n".join(lines)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


async def list_dead_letters(kafka: KafkaSettings, publisher: PublisherSettings, limit: int, as_json: bool) -> int:
    """The CLI command: print the newest ``limit`` dead letters of both topics."""
    letters: list[DeadLetter] = []
    for topic in dead_letter_topics(kafka, publisher):
        letters.extend(await read_dead_letters(kafka, topic))
    letters.sort(key=lambda letter: (letter.time, letter.topic, letter.partition, letter.offset))
    newest = letters[-limit:] if limit > 0 else letters
    print(orjson.dumps([asdict(letter) for letter in newest]).decode() if as_json else render(newest))
    return 0
