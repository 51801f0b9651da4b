"""The capture process's own Prometheus endpoint: what only it knows.

``GET /metrics`` on ``[source] metrics_address`` (off by default), through prometheus-client, with
``/healthz`` and ``/readyz`` (``cdc.readiness``) beside it.
The management API's ``/metrics`` reports the slot lag too, read from the server; this
endpoint adds the capture side: events captured, changes dead-lettered (too large for Kafka,
or not convertible: alert when it grows), the confirmed LSN, reconnects, the heartbeat's age,
whether the slot lag is over ``max_slot_lag_bytes`` (the alarm the log also raises), whether
the slot is a failover slot and whether each standby's copy of it is ready to take over, and the
backfill's rows read, published and superseded by the stream (``walhook_cdc_backfill_*``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cdc.errors import SourceError
from cdc.pipeline import CaptureStats
from models.errors import WalhookError
from models.metrics import MetricsEndpoint, process_registry
from models.metrics import parse_address as _parse_address
from models.settings import SourceSettings


class CaptureCollector(Collector):
    """Reads ``CaptureStats`` at scrape time (``clock`` gives ``time.monotonic()`` readings)."""

    def __init__(self, stats: CaptureStats, source: SourceSettings, clock: object = time.monotonic) -> None:
        self._stats, self._source, self._clock = stats, source, clock

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield CounterMetricFamily("walhook_cdc_events_captured", "Events the capture sent to Kafka",
                                  value=s.events_captured)
        yield CounterMetricFamily("walhook_cdc_events_dead_lettered", "Changes recorded on the capture "
                                  "dead-letter topic instead of the events topic", value=s.events_dead_lettered)
        yield GaugeMetricFamily("walhook_cdc_confirmed_lsn", "The slot position confirmed to Postgres",
                                value=s.confirmed_lsn)
        yield CounterMetricFamily("walhook_cdc_reconnects", "Reconnections to the source", value=s.reconnects)
        if s.slot_lag_bytes is not None:
            yield GaugeMetricFamily("walhook_cdc_slot_lag_bytes", "WAL the slot keeps behind the server's "
                                    "current position", value=s.slot_lag_bytes)
        yield from self._alarm()
        yield from self._failover()
        yield from self._backfill()
        age = s.heartbeat_age(self._clock())  # type: ignore[operator]
        if age is not None:
            yield GaugeMetricFamily("walhook_cdc_heartbeat_age_seconds", "Seconds since the last heartbeat came "
                                    "back through the stream", value=round(age, 3))

    def _alarm(self) -> Iterator[Metric]:
        limit = self._source.max_slot_lag_bytes
        if limit is None:
            return
        lag = self._stats.slot_lag_bytes
        yield GaugeMetricFamily("walhook_cdc_slot_lag_limit_bytes", "[source] max_slot_lag_bytes", value=limit)
        yield GaugeMetricFamily("walhook_cdc_slot_lag_over_limit", "Whether the slot lag is over the limit: 1, or 0",
                                value=int(lag is not None and lag > limit))


    def _failover(self) -> Iterator[Metric]:
        """Whether the slot is a failover slot, and per standby whether its copy could take over (1) or not (0)."""
        s = self._stats
        if s.failover_slot is not None:
            yield GaugeMetricFamily("walhook_cdc_slot_failover", "Whether the slot is a failover slot: 1, or 0",
                                    value=int(s.failover_slot))
        if s.standbys is not None:
            ready = GaugeMetricFamily("walhook_cdc_standby_failover_ready", "Whether a standby's copy of the slot "
                                      "could take over: 1, or 0", labels=["standby"])
            for standby in s.standbys:
                ready.add_metric([standby.standby], int(standby.ready))
            yield ready


    def _backfill(self) -> Iterator[Metric]:
        s = self._stats
        yield GaugeMetricFamily("walhook_cdc_backfill_running", "Whether a backfill is running: 1, or 0",
                                value=int(s.backfill_id is not None))
        for name, value, text in (("read", s.backfill_rows_read, "Rows backfills read"),
                                  ("published", s.backfill_rows_published, "Rows backfills published as read events"),
                                  ("superseded", s.backfill_rows_superseded, "Rows backfills skipped: a newer change "
                                   "of theirs was already on its way")):
            yield CounterMetricFamily(f"walhook_cdc_backfill_rows_{name}", text, value=value)
        yield GaugeMetricFamily("walhook_cdc_backfill_longest_hold_seconds", "The longest a backfill held the "
                                "stream (a decision, a slice)", value=round(s.backfill_longest_hold, 6))


def capture_registry(stats: CaptureStats, source: SourceSettings, clock: object = time.monotonic
                     ) -> CollectorRegistry:
    registry = process_registry()
    registry.register(CaptureCollector(stats, source, clock))
    return registry


def render_metrics(stats: CaptureStats, source: SourceSettings, now: float | None = None) -> str:
    """The Prometheus text exposition of ``stats`` (``now`` is a ``time.monotonic()`` reading)."""
    clock = time.monotonic if now is None else (lambda: now)
    return generate_latest(capture_registry(stats, source, clock)).decode()


def parse_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``SourceError`` naming the setting otherwise."""
    try:
        return _parse_address(address, "[source] metrics_address")
    except WalhookError as exc:
        raise SourceError(str(exc)) from exc


class MetricsServer(MetricsEndpoint):
    """Serves the capture's registry and its readiness (``stats.checks``) while capture runs."""

    def __init__(self, stats: CaptureStats, source: SourceSettings, address: str) -> None:
        host, port = parse_address(address)
        super().__init__(capture_registry(stats, source), host, port, "[source] metrics_address",
                         stats.checks.readiness)
