"""The management API's ``/metrics``: deployment-wide figures read from the store and the source at
scrape time, exposed through prometheus-client (HELP and TYPE lines, histogram buckets).

Any API process reports the whole deployment: deliveries by status, the retry backlog,
failure streaks, events the integrations' conditions filtered out, the latency of the latest attempts
of the last hour (a gauge histogram: it is a window, so its counts may fall), the delivery log's
size, and slot lag. A scrape costs the store a bounded amount whatever the log's size: what would
take a scan of the log is estimated from Postgres's statistics or read from a bounded sample
(``publisher.store.reports``). What only a running publisher or capture process knows is on their own endpoints
(``publisher.metrics``, ``cdc.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from publisher.store import Store
from publisher.store.reports import FAILED_COUNTED_UP_TO

BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_ATTEMPTS = 10_000
"""The attempt-duration histogram counts the latest this many attempts of the last hour: a scrape reads that
many, whatever the hour held (the publisher's own endpoint has every attempt in a real histogram)."""


class _Snapshot(Collector):
    """Families computed before the scrape renders them (the store is read asynchronously)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def api_metrics(store: Store, slot_lag: int | None, per_integration: bool = False) -> bytes:
    """The exposition text of the store's figures (and the slot lag, when the source was read).

    Failure streaks are totals (how many integrations fail, the longest streak) unless
    ``per_integration`` (``[api] metrics_per_integration``) asks for one series per integration.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Snapshot([*await _deliveries(store, per_integration), await _latency(store),
                                 *await _log(store), *_slot(slot_lag)]))
    return generate_latest(registry)


async def _deliveries(store: Store, per_integration: bool) -> list[Metric]:
    counts = await store.delivery_counts()
    by_status = GaugeMetricFamily("walhook_deliveries", "Deliveries in the store by status: pending exact, failed "
                                  f"exact up to {FAILED_COUNTED_UP_TO} and estimated beyond, succeeded an estimate "
                                  "(the table's rows from Postgres's statistics less the others)", labels=["status"])
    for status, n in sorted(counts.items()):
        by_status.add_metric([status], n)
    backlog = GaugeMetricFamily("walhook_retry_backlog", "Pending deliveries (exact)", value=counts["pending"])
    streaks = await store.failure_streaks()
    families: list[Metric] = [by_status, backlog,
                GaugeMetricFamily("walhook_integrations_failing", "Integrations failing without a success",
                                  value=len(streaks)),
                GaugeMetricFamily("walhook_integration_failing_seconds_max", "The longest failure streak, seconds",
                                  value=round(max(streaks.values(), default=0)))]
    filtered = await store.filtered_counts()
    families.append(CounterMetricFamily("walhook_events_filtered", "Events integrations' conditions filtered out "
                                        "(no delivery)", value=sum(filtered.values())))
    if per_integration:
        by_integration = CounterMetricFamily("walhook_integration_events_filtered", "Events an integration's "
                                             "conditions filtered out", labels=["integration"])
        for integration, n in sorted(filtered.items()):
            by_integration.add_metric([str(integration)], n)
        families.append(by_integration)
    if per_integration:
        failing = GaugeMetricFamily("walhook_integration_failing_seconds", "Seconds an integration has been "
                                    "failing without a success", labels=["integration"])
        for integration, seconds in sorted(streaks.items()):
            failing.add_metric([str(integration)], round(seconds))
        families.append(failing)
    return families


async def _latency(store: Store) -> Metric:
    bounds_ms = [int(b * 1000) for b in BUCKETS_SECONDS]
    buckets, total, sum_ms = await store.attempt_durations(bounds_ms, timedelta(hours=1), LATENCY_ATTEMPTS)
    family = GaugeHistogramMetricFamily("walhook_attempt_duration_seconds", f"Durations of the latest "
                                        f"{LATENCY_ATTEMPTS} attempts of the last hour (fewer if the hour had fewer)")
    family.add_metric([], [(str(b), n) for b, n in zip(BUCKETS_SECONDS, buckets, strict=True)] + [("+Inf", total)],
                      gsum_value=sum_ms / 1000)
    return family


async def _log(store: Store) -> list[Metric]:
    size = await store.log_size()
    bytes_ = GaugeMetricFamily("walhook_delivery_log_bytes", "Bytes of the delivery log on disk (tables, TOAST "
                               "and indexes)", labels=["table"])
    bytes_.add_metric(["deliveries"], size.deliveries_bytes)
    bytes_.add_metric(["attempts"], size.attempts_bytes)
    rows = GaugeMetricFamily("walhook_delivery_log_rows", "Live rows of the delivery log (statistics)",
                             labels=["table"])
    rows.add_metric(["deliveries"], size.deliveries_rows)
    rows.add_metric(["attempts"], size.attempts_rows)
    return [bytes_, rows]


def _slot(lag: Any) -> list[Metric]:
    if lag is None:
        return []
    return [GaugeMetricFamily("walhook_slot_lag_bytes", "WAL the slot keeps (pg_replication_slots)", value=lag)]
