"""Capture's part of a change's trace: the writer that starts it, used only when ``[tracing]`` is on.

Both row paths (the compiled ``cdc._rowpath`` and the reference ``cdc.rowpath.encode_reference``)
end in ``KafkaWriter.append_record`` with the event's key, value and headers. ``TracedKafkaWriter``
wraps that one call, so the two paths stay byte for byte equal and neither knows of tracing: per
event it starts a capture span (slot, commit LSN, table, entity key) and, under it, a Kafka produce
span, appends the produce span's ``traceparent`` to the record's headers, and ends the produce span
when Kafka acknowledges the record's batch. With tracing off the pipeline builds a plain
``KafkaWriter``: no span, no header, no check per event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from cdc.kafka import KafkaWriter, _Batch, partition_for
from cdc.lsn import format_lsn
from models.headers import ENTITY_KEY, EVENT_ID, TRACEPARENT
from models.settings import KafkaSettings
from models.tracing import traceparent_of

_LSN = slice(4, 20)  # evt_{commit LSN, 16 hex digits}_{index}: see models.events.event_id_prefix


class TracedKafkaWriter(KafkaWriter):
    """A ``KafkaWriter`` whose every record starts a trace: capture span, then produce span, then Kafka."""

    def __init__(self, tracer: Tracer, slot: str, settings: KafkaSettings, *args: Any, **kwargs: Any) -> None:
        super().__init__(settings, *args, **kwargs)
        self._tracer = tracer
        self._slot = slot
        self._topic = settings.topic
        self._producing: dict[int, list[Span]] = {}  # id(batch) -> its records' produce spans

    def append_record(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]], token: object) -> None:
        fields = dict(headers)
        event_id, entity_key = fields[EVENT_ID].decode(), fields[ENTITY_KEY].decode()
        with self._tracer.start_as_current_span("capture", end_on_exit=True) as capture:
            if capture.is_recording():
                capture.set_attributes(self._capture_attributes(event_id, entity_key))
            produce = self._tracer.start_span(f"{self._topic} publish", kind=SpanKind.PRODUCER,
                                              attributes=self._produce_attributes(event_id, key))
        traceparent = traceparent_of(produce)
        if traceparent is not None:
            headers = [*headers, (TRACEPARENT, traceparent.encode())]
        appended = self._in_flight
        super().append_record(key, value, headers, token)
        self._hold(produce, key, refused=self._in_flight == appended)

    def _capture_attributes(self, event_id: str, entity_key: str) -> dict[str, str]:
        lsn = int(event_id[_LSN], 16) if event_id.startswith("evt_") else 0
        return {"walhook.slot": self._slot, "walhook.lsn": format_lsn(lsn), "walhook.event_id": event_id,
                "walhook.entity_key": entity_key, "db.collection.name": self._tables.get(entity_key, "")}

    def _produce_attributes(self, event_id: str, key: bytes) -> dict[str, str]:
        return {"messaging.system": "kafka", "messaging.operation.type": "send",
                "messaging.destination.name": self._topic, "messaging.message.id": event_id,
                "messaging.kafka.message.key": key.decode("utf-8", "replace")}

    def _hold(self, produce: Span, key: bytes, refused: bool) -> None:
        """Keep the produce span with the batch the record went into (the partition's open one), until Kafka
        answers for it; a record refused as too large (it went the dead-letter way) ends it now."""
        if refused:
            produce.set_status(Status(StatusCode.ERROR, "refused: larger than [kafka] max_request_size"))
            produce.end()
            return
        batch = self._open_batches[partition_for(key, self._partitions)]
        self._producing.setdefault(id(batch), []).append(produce)

    def _settle(self, done: asyncio.Future[Any], batch: _Batch) -> None:
        super()._settle(done, batch)
        error = "cancelled" if done.cancelled() else done.exception()
        for span in self._producing.pop(id(batch), ()):
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, str(error)))
            span.end()
