"""Dead letters without a broker: the defaults, the record the capture writes, its metric, the listing."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from cdc.kafka import dead_letter_record
from cdc.metrics import render_metrics
from cdc.pipeline import CaptureStats
from cdc.topics import message_limit_of
from models.settings import KafkaSettings, PublisherSettings, SourceSettings
from walhook.deadletters import dead_letter_of, dead_letter_topics, render


def test_the_capture_dead_letter_topic_is_on_by_default_and_apart_from_the_publishers() -> None:
    kafka = KafkaSettings(bootstrap_servers="kafka:9092", topic="events")
    assert kafka.capture_dead_letter_topic == "events.capture-dead-letter"
    assert dead_letter_topics(kafka, PublisherSettings()) == ["events.capture-dead-letter", "events.dead-letter"]
    assert kafka.max_request_size == kafka.max_message_bytes == 8 << 20
    assert KafkaSettings(bootstrap_servers="k", on_refused_event="stop").capture_dead_letter_topic is None
    shared = KafkaSettings(bootstrap_servers="k", topic="events", dead_letter_topic="events.dead-letter")
    assert dead_letter_topics(shared, PublisherSettings()) == ["events.dead-letter"]


def test_the_dead_letter_topic_cannot_be_the_events_topic() -> None:
    with pytest.raises(ValidationError, match="dead_letter_topic must differ from topic"):
        KafkaSettings(bootstrap_servers="k", topic="events", dead_letter_topic="events")


def test_created_topics_allow_the_larger_of_request_and_batch_size() -> None:
    assert KafkaSettings(bootstrap_servers="k", max_request_size=4096, max_batch_size=65536).max_message_bytes == 65536


def test_the_dead_letter_record_names_the_table_and_keeps_no_values() -> None:
    event = {"eventId": "evt_1_000000", "eventTimestamp": "t", "operationType": "updated", "entityKey": "docs",
             "entityPath": "docs/1", "entityId": "1", "organizationId": "acme",
             "data": {"value": {"properties": {"body": "secret"}}}, "transaction": {"id": 5}}
    record = orjson.loads(dead_letter_record(event, "MessageSizeTooLargeError: big", 9_000_000, "public.docs"))
    assert record["table"] == "public.docs" and record["size"] == 9_000_000 and "data" not in record
    assert record["reason"] == "MessageSizeTooLargeError: big" and record["eventId"] == "evt_1_000000"


def test_dead_lettered_changes_are_a_counter_of_the_capture_metrics() -> None:
    stats = CaptureStats()
    stats.dead_lettered()
    stats.dead_lettered()
    text = render_metrics(stats, SourceSettings(dsn="postgresql://x"))
    assert "# TYPE walhook_cdc_events_dead_lettered_total counter\nwalhook_cdc_events_dead_lettered_total 2.0\n" in text


class _Response:
    def __init__(self, entries: list[tuple[object, ...]]) -> None:
        self.resources = [(0, "", 2, "events", entries)]


def test_the_topic_limit_is_read_from_describe_configs() -> None:
    assert message_limit_of([_Response([("cleanup.policy", "delete"), ("max.message.bytes", "2000", False)])]) == 2000
    assert message_limit_of([_Response([])]) is None


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t.dead", 0, 7, 1_764_579_600_000, 0, None, value, None, len(value), 0, headers or [])


def test_both_forms_of_dead_letter_are_summarised() -> None:
    capture = dead_letter_of(record(orjson.dumps({"eventId": "evt_1_000002", "entityPath": "docs/1", "size": 12,
                                                  "table": "public.docs", "reason": "too large"})))
    assert (capture.source, capture.event_id, capture.table, capture.entity_path, capture.size, capture.reason) == (
        "capture", "evt_1_000002", "public.docs", "docs/1", 12, "too large")
    assert capture.time == "2025-12-01T09:00:00Z" and capture.offset == 7
    foreign = dead_letter_of(record(b"junk", [("walhook-dead-letter-reason", b"not JSON"),
                                              ("walhook-dead-letter-truncated-from", b"5000000")]))
    assert (foreign.source, foreign.reason, foreign.size, foreign.event_id) == (
        "publisher", "not JSON", 5_000_000, None)
    broken = dead_letter_of(record(b"[1]"))
    assert broken.source == "capture" and broken.reason.startswith("unreadable dead-letter record")
    lines = render([capture, foreign]).splitlines()
    assert len(lines) == 3 and lines[1].endswith("too large") and "evt_1_000002" in lines[1]
