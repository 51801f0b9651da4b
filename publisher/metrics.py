"""The publisher process's own Prometheus metrics: what only a running publisher knows.

Served on ``[publisher] metrics_address`` (off by default) through prometheus-client:
consumer lag per partition of this process's assignment, lane depth per integration,
attempts by outcome, attempt latency (a standard histogram), deliveries recorded (a
counter: ``rate()`` gives deliveries recorded per second), and the delivery log's size and
pruning, kept up to date by the pruning loop. The management API's ``/metrics`` reports the
deployment-wide figures read from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.metrics import process_registry
from publisher.store import AttemptRecord, LogSize, Pruned

_OUTCOME = {"succeeded": "succeeded", "pending": "retrying", "failed": "failed"}


class _Live(Collector):
    """Figures read from the running process at scrape time."""

    def __init__(self, lag: Callable[[], Mapping[int, int]], lanes: Callable[[], Mapping[int, int]],
                 routing: Callable[[], Mapping[str, int]]) -> None:
        self._lag, self._lanes, self._routing = lag, lanes, routing

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("walhook_publisher_consumer_lag", "Records of the events topic not yet consumed, "
                                "per partition this publisher is assigned", labels=["partition"])
        for partition, records in sorted(self._lag().items()):
            lag.add_metric([str(partition)], records)
        yield lag
        depth = GaugeMetricFamily("walhook_publisher_lane_depth", "Deliveries waiting in an integration's lane "
                                  "in this process", labels=["integration"])
        for integration, size in sorted(self._lanes().items()):
            depth.add_metric([str(integration)], size)
        yield depth
        waiting = GaugeMetricFamily("walhook_publisher_routing_waiting", "Consumed records waiting for their "
                                    "organization's turn to be routed (organizations with any)",
                                    labels=["organization"])
        for organization, records in sorted(self._routing().items()):
            waiting.add_metric([organization], records)
        yield waiting


class PublisherMetrics:
    """One registry per publisher; ``watch`` connects the figures read at scrape time."""

    def __init__(self) -> None:
        self.registry = process_registry()  # with prometheus-client's process, GC and platform collectors
        self.attempts = Counter("walhook_publisher_attempts", "Attempts by outcome (the delivery's state after it)",
                                ["outcome"], registry=self.registry)
        self.attempt_seconds = Histogram("walhook_publisher_attempt_duration_seconds", "Duration of one attempt "
                                         "(an HTTP request of a delivery or a batch)", registry=self.registry)
        self.recorded = Counter("walhook_publisher_deliveries_recorded", "Deliveries recorded from the stream",
                                registry=self.registry)
        self.log_bytes = Gauge("walhook_delivery_log_bytes", "Bytes of the delivery log on disk (tables, TOAST "
                               "and indexes)", ["table"], registry=self.registry)
        self.log_partitions = Gauge("walhook_delivery_log_attempt_partitions", "Partitions of the attempts log",
                                    registry=self.registry)
        self.pruned = Counter("walhook_delivery_log_pruned", "Rows and partitions pruning removed", ["what"],
                              registry=self.registry)

    def watch(self, lag: Callable[[], Mapping[int, int]], lanes: Callable[[], Mapping[int, int]],
              routing: Callable[[], Mapping[str, int]] = dict) -> None:
        self.registry.register(_Live(lag, lanes, routing))

    def attempts_recorded(self, records: Sequence[AttemptRecord]) -> None:
        # A batch is one request: one latency observation, one outcome per delivery it carried.
        requests = {(r.integration_id, r.started_at): r.duration_ms for r in records}
        for duration_ms in requests.values():
            self.attempt_seconds.observe(duration_ms / 1000)
        for record in records:
            self.attempts.labels(_OUTCOME.get(record.status, record.status)).inc()

    def log_pruned(self, pruned: Pruned, size: LogSize) -> None:
        self.pruned.labels("deliveries").inc(pruned.deliveries_deleted)
        self.pruned.labels("attempts").inc(pruned.attempts_deleted)
        self.pruned.labels("partitions").inc(len(pruned.partitions_dropped))
        self.log_bytes.labels("deliveries").set(size.deliveries_bytes)
        self.log_bytes.labels("attempts").set(size.attempts_bytes)
        self.log_partitions.set(size.attempt_partitions)
