"""Where the latency goes: each event's path split into stages, from timestamps walhook already keeps.

For every row, after its rate's run (so the measurement does not load the pipeline):

* commit returned to the writer (the writer's clock);
* the Kafka record's timestamp: the CreateTime the CDC stamped when it read the change and added
  it to its partition's batch (millisecond resolution). The capture reads while a linger round is
  due, just before the round's batches leave, so commit->kafka includes the wait for the round
  (``linger_ms`` at most) and kafka->attempt starts about when the batch was sent;
* the first attempt's ``started_at``: when the dispatcher began the HTTP request;
* the arrival at the receiver;
* the delivery's ``created_at`` in the store: ``now()`` of the publisher's transaction that
  logs the batch of first attempts, after their requests.

Only inserts are split (an update's record has the key of the row it changed).

All clocks are this machine's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import AIOKafkaConsumer

from bench.latency_pipeline import percentile

if TYPE_CHECKING:
    from bench.latency_pipeline import WalhookPipeline
    from bench.latency_receiver import TimingReceiver

STAGES = {  # name: (from, to)
    "commit->kafka": ("commit", "kafka"),
    "kafka->attempt": ("kafka", "attempt"),
    "attempt->received": ("attempt", "received"),
    "received->logged": ("received", "logged"),
}

STORE_TIMES = """SELECT d.entity_path, extract(epoch FROM d.created_at)::float8,
extract(epoch FROM a.started_at)::float8
FROM walhook.deliveries d JOIN walhook.attempt_log a ON a.delivery_id = d.id AND a.number = 1
WHERE d.integration_id = %s AND d.operation = 'created'"""


class KafkaTimestamps:
    """Reads the events topic from the start, one batch of ids at a time, keeping each record's timestamp."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, group_id=None,
                                          auto_offset_reset="earliest", enable_auto_commit=False)
        self.times: dict[int, float] = {}

    async def collect(self, ids: set[int], timeout: float = 60.0) -> dict[int, float]:
        """Consume until every id in ``ids`` was seen (or ``timeout``); their timestamps in seconds."""
        deadline = time.monotonic() + timeout
        self._consumer.resume(*self._consumer.assignment())
        while not ids <= self.times.keys() and time.monotonic() < deadline:
            for records in (await self._consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:  # key: b"<organization>|items/<id>"
                    row_id = int((record.key or b"").rsplit(b"/", 1)[1])
                    self.times.setdefault(row_id, record.timestamp / 1000)  # the insert's, not a later update's
        self._consumer.pause(*self._consumer.assignment())  # no fetching while the next rate is measured
        return {i: self.times[i] for i in ids if i in self.times}

    async def __aenter__(self) -> KafkaTimestamps:
        await self._consumer.start()
        self._consumer.pause(*self._consumer.assignment())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._consumer.stop()


async def store_times(store_dsn: str, integration_id: int) -> dict[int, tuple[float, float]]:
    """Per row id: (delivery logged, first attempt started), from the publisher's store."""
    await asyncio.sleep(0.5)  # attempts are written in batches every few milliseconds
    async with await psycopg.AsyncConnection.connect(store_dsn) as conn:
        rows = await (await conn.execute(STORE_TIMES, [integration_id])).fetchall()
    return {int(path.rsplit("/", 1)[1]): (created, started) for path, created, started in rows}


async def stage_breakdown(pipeline: WalhookPipeline, kafka: KafkaTimestamps, receiver: TimingReceiver,
                          committed: dict[int, float]) -> dict[str, Any]:
    """p50/p99 in ms of every stage, over the rows whose every timestamp is known."""
    produced = await kafka.collect(set(committed))
    stored = await store_times(pipeline.store_dsn, pipeline.integration_id)
    points = [{"commit": t, "kafka": produced[i], "logged": stored[i][0], "attempt": stored[i][1],
               "received": receiver.arrivals[i]}
              for i, t in committed.items() if i in produced and i in stored and i in receiver.arrivals]
    result: dict[str, Any] = {}
    for name, (start, end) in STAGES.items():
        values = sorted((p[end] - p[start]) * 1000 for p in points)
        result[name] = {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99)}
    result["events"] = len(points)
    return result
