"""What capture and delivery share of tracing: the tracer a process gets from ``[tracing]``, and the W3C
``traceparent`` that carries a change's trace from one process to the other.

Capture and publisher are separate processes that meet only through Kafka: capture writes the trace
context of its produce span as a ``traceparent`` record header (``models.headers.TRACEPARENT``), the
publisher continues the trace from it. Nothing here is global: each process builds its own tracer
provider, so a test can run both in one process with an in-memory exporter.

With ``[tracing] enabled = false`` (the default) ``tracer_for`` returns None and no caller builds a span:
the traced code paths are wrappers installed only when there is a tracer (``cdc.tracing``,
``publisher.tracing``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from models.errors import ConfigError
from models.headers import TRACEPARENT
from models.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_W3C = TraceContextTextMapPropagator()


def tracer_provider(settings: TracingSettings, process: str, exporter: SpanExporter | None = None
                    ) -> TracerProvider | None:
    """The SDK provider of one process (``cdc`` or ``publisher``), exporting over OTLP/HTTP to
    ``settings.endpoint`` (or to ``exporter``, as tests do); None when tracing is off."""
    if not settings.enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise ConfigError("[tracing] enabled = true needs the tracing extra: pip install 'walhook[tracing]'") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": f"{settings.service_name}-{process}"}),
                              sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter or _otlp_exporter(settings.endpoint)))
    return provider


def _otlp_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def tracer_for(provider: TracerProvider | None, name: str) -> Tracer | None:
    """The tracer of one half (``walhook.cdc``, ``walhook.publisher``), or None when tracing is off."""
    return None if provider is None else provider.get_tracer(name)


def traceparent_of(span: Span) -> str | None:
    """The W3C ``traceparent`` naming ``span`` as the parent of what follows (None for an invalid span)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | bytes | None) -> Context | None:
    """The trace context a ``traceparent`` carries; None when there is none (or it is malformed)."""
    if not traceparent:
        return None
    value = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
    context = _W3C.extract({TRACEPARENT: value})
    return context if context else None
