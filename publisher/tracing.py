"""Delivery's part of a change's trace, installed only when ``[tracing]`` is on.

A consumed record whose headers carry a ``traceparent`` (capture's produce span) gets a consume/route
span under it (organization, entity key, operation, recipients); each of its deliveries carries that
span's context in memory (``NewDelivery.traceparent``), and each attempt of a delivery that has one is
a span under it (integration id, URL host, attempt number, status code). An integration that opted in
(``send_traceparent``) receives the attempt span's ``traceparent`` header, so its own spans join the
trace. A delivery that waited in the store (a retry) has no trace context left: its later attempts are
not traced.

Both hooks are wrappers: ``traced_routing`` wraps the publisher's per-record routing and
``TracedDispatcher`` the dispatcher's attempt; with tracing off neither exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit

from aiokafka import ConsumerRecord
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, get_current_span

from models.headers import ENTITY_KEY, OPERATION_TYPE, ORGANIZATION_ID, TRACEPARENT
from models.tracing import context_of, traceparent_of
from publisher.sending.dispatch import Dispatcher
from publisher.sending.retry import Verdict
from publisher.sending.sender import AttemptResult
from publisher.store import Delivery, Integration, NewDelivery

Route = Callable[[ConsumerRecord[bytes, bytes], Counter[int]], list[NewDelivery]]


def traced_routing(route: Route, tracer: Tracer) -> Route:
    """``route`` (one record -> its deliveries) with a consume/route span per record that carries a trace."""
    def traced(record: ConsumerRecord[bytes, bytes], filtered: Counter[int]) -> list[NewDelivery]:
        headers = dict(record.headers or ())
        parent = context_of(headers.get(TRACEPARENT))
        if parent is None:  # capture did not trace it (or the record is not capture's): nothing to continue
            return route(record, filtered)
        with tracer.start_as_current_span(f"{record.topic} process", context=parent, kind=SpanKind.CONSUMER,
                                          attributes=_record_attributes(record, headers)) as span:
            deliveries = route(record, filtered)
            span.set_attribute("walhook.recipients", len(deliveries))
            traceparent = traceparent_of(span)
        return [replace(delivery, traceparent=traceparent) for delivery in deliveries]
    return traced


def _record_attributes(record: ConsumerRecord[bytes, bytes], headers: dict[str, bytes]) -> dict[str, str | int]:
    def text(name: str) -> str:
        return headers.get(name, b"").decode("utf-8", "replace")
    return {"messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": record.topic, "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset, "walhook.organization_id": text(ORGANIZATION_ID),
            "walhook.entity_key": text(ENTITY_KEY), "walhook.operation": text(OPERATION_TYPE)}


def _traceparent_of(deliveries: list[Delivery]) -> str | None:
    """The routing span of a request's first delivery that has one (a batch joins the first one's trace)."""
    return next((d.live.traceparent for d in deliveries if d.live is not None and d.live.traceparent), None)


class TracedDispatcher(Dispatcher):
    """A dispatcher whose attempts of traced deliveries are spans; opted-in integrations get ``traceparent``."""

    tracer: Tracer

    async def _attempt(self, deliveries: list[Delivery], integration: Integration) -> bool:
        parent = context_of(_traceparent_of(deliveries))
        if parent is None:
            return await super()._attempt(deliveries, integration)
        with self.tracer.start_as_current_span("webhook attempt", context=parent, kind=SpanKind.CLIENT,
                                               attributes=_attempt_attributes(deliveries, integration)) as span:
            if integration.send_traceparent and (traceparent := traceparent_of(span)):
                integration = replace(integration, headers={**integration.headers, TRACEPARENT: traceparent})
            return await super()._attempt(deliveries, integration)

    def _settle(self, delivery: Delivery, integration: Integration, started: datetime,
                result: AttemptResult) -> Verdict:
        verdict = super()._settle(delivery, integration, started, result)
        span = get_current_span()  # the attempt's span, or a non-recording one when not traced
        if result.status is not None:
            span.set_attribute("http.response.status_code", result.status)
        span.set_attribute("walhook.verdict", verdict.value)
        if not result.succeeded:
            span.set_status(Status(StatusCode.ERROR, result.describe()))
        return verdict


def _attempt_attributes(deliveries: list[Delivery], integration: Integration) -> dict[str, str | int]:
    return {"walhook.integration_id": integration.id, "server.address": urlsplit(integration.url).hostname or "",
            "http.request.method": "POST", "walhook.attempt": deliveries[0].attempts + 1,
            "walhook.webhook_id": deliveries[0].webhook_id, "walhook.deliveries": len(deliveries)}


def traced_dispatcher(tracer: Tracer, *args: object, **kwargs: object) -> TracedDispatcher:
    """A ``TracedDispatcher`` built like a ``Dispatcher``, reporting to ``tracer``."""
    dispatcher = TracedDispatcher(*args, **kwargs)  # type: ignore[arg-type]
    dispatcher.tracer = tracer
    return dispatcher
