"""OpenTelemetry traces on the real stack: one change, one trace, from capture to each attempt.

Capture and publisher run in this process, each with its own tracer provider (as two processes
would have) exporting to one in-memory exporter; the only link between them is the ``traceparent``
Kafka header. The receiver is real HTTP and verifies every request.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cdc.pipeline import run_capture
from cdc.rowpath import COMPILED_AVAILABLE
from models.headers import TRACEPARENT
from models.settings import Settings, TracingSettings
from models.tracing import context_of, tracer_for, tracer_provider
from tests.conftest import Servers
from tests.receivers import ScriptedReceiver
from tests.support import wait_for
from tests.test_capture import ENTITY, settings
from tests.test_delivery import org_with, publishing

TABLE = "CREATE TABLE items (id serial PRIMARY KEY, org text NOT NULL, name text)"
ON = TracingSettings(enabled=True)


def provider(process: str, exporter: InMemorySpanExporter) -> TracerProvider:
    made = tracer_provider(ON, process, exporter)
    assert made is not None
    return made


async def capture_with(database: str, servers: Servers, topic: str, tracer_provider_: TracerProvider | None,
                       row_path: str = "auto") -> asyncio.Task[None]:
    source, kafka = settings(database, servers, topic, row_path)
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [ENTITY], stop,
                                           tracer=tracer_for(tracer_provider_, "walhook.cdc")))
    task.stop = stop  # type: ignore[attr-defined]
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.stop.set()  # type: ignore[attr-defined]
    await asyncio.wait_for(task, 20)


def spans(providers: list[TracerProvider], exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    for each in providers:
        each.force_flush()
    return list(exporter.get_finished_spans())


async def test_one_change_is_one_trace_from_capture_to_each_attempt(servers: Servers, database: str,
                                                                    topic: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(TABLE)
    exporter = InMemorySpanExporter()
    cdc, delivery = provider("cdc", exporter), provider("publisher", exporter)
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "plain") as (store, ids):
        ids["traced"] = await store.add_integration("acme", receiver.url("traced"), ["items:*"],
                                                    send_traceparent=True)
        ids["plain"] = ids.pop("plain")
        await store.update_integration("acme", ids["plain"], {"events": ["items:*"]})
        receiver.secrets["traced"] = receiver.secrets["plain"]
        capture = await capture_with(database, servers, topic, cdc)
        async with publishing(servers, topic, store, tracer=tracer_for(delivery, "walhook.publisher")):
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO items (org, name) VALUES ('acme', 'one')")
            await wait_for(lambda: len(receiver.verified()) == 2, what="both webhooks")
            await wait_for(lambda: len([s for s in spans([cdc, delivery], exporter)
                                        if s.name == "webhook attempt"]) == 2, what="both attempt spans")
        await stopped(capture)
        (logged,) = await store.attempts_of((await store.deliveries(ids["traced"]))[0].id)
    finished = spans([cdc, delivery], exporter)
    by_name = {name: [s for s in finished if s.name == name] for name in {s.name for s in finished}}
    (capture_span,) = by_name["capture"]
    (produce,) = by_name[f"{topic} publish"]
    (process,) = by_name[f"{topic} process"]
    attempts = by_name["webhook attempt"]
    assert {s.context.trace_id for s in finished} == {capture_span.context.trace_id}  # one trace
    assert capture_span.parent is None
    assert produce.parent.span_id == capture_span.context.span_id  # type: ignore[union-attr]
    assert process.parent.span_id == produce.context.span_id and process.parent.is_remote  # type: ignore[union-attr]
    assert all(a.parent.span_id == process.context.span_id for a in attempts)  # type: ignore[union-attr]
    assert capture_span.attributes["walhook.slot"] == "walhook"
    assert capture_span.attributes["db.collection.name"] == "public.items"
    assert capture_span.attributes["walhook.entity_key"] == "items"
    assert str(capture_span.attributes["walhook.lsn"]).count("/") == 1
    assert process.attributes["walhook.organization_id"] == "acme"
    assert process.attributes["walhook.operation"] == "created"
    assert {a.attributes["walhook.integration_id"] for a in attempts} == set(ids.values())
    assert {(a.attributes["http.response.status_code"], a.attributes["walhook.attempt"],
             a.attributes["server.address"]) for a in attempts} == {(204, 1, "127.0.0.1")}
    # Only the integration that opted in gets the traceparent: the attempt's own span as the parent.
    (traced,) = receiver.verified("traced")
    (plain,) = receiver.verified("plain")
    assert TRACEPARENT not in plain.headers
    (traced_attempt,) = [a for a in attempts if a.attributes["walhook.integration_id"] == ids["traced"]]
    sent = context_of(traced.headers[TRACEPARENT])
    assert sent is not None
    assert traced.headers[TRACEPARENT].split("-")[1:3] == [f"{traced_attempt.context.trace_id:032x}",
                                                            f"{traced_attempt.context.span_id:016x}"]
    # The attempt log shows it (it is no secret), so an operator can find the trace from the attempt.
    assert logged.request_headers[TRACEPARENT] == traced.headers[TRACEPARENT]


def streaming(database: str) -> bool:
    with psycopg.connect(database, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_replication_slots WHERE active").fetchone() == (1,)


async def headers_on(servers: Servers, topic: str, expected: int) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers.bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[dict[str, bytes]] = []
    try:
        for _ in range(60):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(dict(record.headers) for record in records)
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("row_path", ["python", *(["compiled"] if COMPILED_AVAILABLE else [])])
async def test_both_row_paths_write_the_traceparent_only_when_tracing_is_on(
        servers: Servers, database: str, topic: str, row_path: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(TABLE)
    exporter = InMemorySpanExporter()
    traced = provider("cdc", exporter)
    for count, tracer in enumerate((None, traced), start=1):
        capture = await capture_with(database, servers, topic, tracer, row_path)
        await wait_for(lambda: streaming(database), what="the slot streaming")
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO items (org, name) VALUES ('acme', 'x')")
        found = await headers_on(servers, topic, count)
        await stopped(capture)
    assert {span.name for span in spans([traced], exporter)} == {"capture", f"{topic} publish"}
    untraced, traced_headers = sorted(found, key=lambda headers: headers["walhook-event-id"])  # commit order
    assert TRACEPARENT not in untraced
    assert context_of(traced_headers.pop(TRACEPARENT)) is not None
    assert set(traced_headers) == set(untraced)  # the row path's own headers, unchanged


def test_tracing_is_off_by_default_and_asks_for_the_extra_only_when_on() -> None:
    assert Settings().tracing.enabled is False
    assert tracer_provider(Settings().tracing, "cdc") is None
    assert context_of("not a traceparent") is None and context_of(None) is None
    with pytest.raises(ValueError, match="sample_ratio"):
        TracingSettings(sample_ratio=2)
