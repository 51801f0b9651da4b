"""The fairness benchmark's two phases: the quiet organization's load alone, then beside the noisy one.

Each phase writes the quiet organization's changes at the same rate for the same time, waits
until every one arrived (or counts the missing ones after a deadline), and summarises their commit ->
received latency and the cores each part kept busy. The second also starts the noisy
organization's writer, waits until the publisher holds every connection the noisy organization
may open, and afterwards reports the noisy load that was really there.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.hanging_receiver import HangingReceiver
from bench.latency import latencies_by_window, latency_summary
from bench.latency_breakdown import KafkaTimestamps, store_times
from bench.latency_pipeline import WalhookPipeline, percentile
from bench.latency_receiver import TimingReceiver
from bench.noisy_organization import NOISY
from bench.paced_writer import PacedWriter, is_update
from bench.procfs import CpuMeter
from models.settings import PublisherSettings

WARMUP_SECONDS = 20.0
"""How long the noisy organization may take to fill its connections; its writer runs this much longer than
the quiet phase, so it is still writing while the quiet organization's last changes arrive."""

NOISY_FIRST_ID = 100_000_000
"""The noisy rows' ids start here: the topic's keys then tell the quiet organization's rows apart by id alone."""

NOISY_IN_STORE = """SELECT
    (SELECT count(*) FROM walhook.deliveries WHERE organization_id = %(org)s AND status = 'pending'),
    (SELECT coalesce(min(coalesce(f.events, 0)), 0) FROM walhook.integrations i
         LEFT JOIN walhook.filtered_events f ON f.integration_id = i.id
         WHERE i.organization_id = %(org)s AND i.events::text LIKE '%%any_of%%')"""


@dataclass
class Quiet:
    """The quiet organization's writer, receiver and load; ``next_id`` is the first row of the next phase."""

    writer: PacedWriter
    receiver: TimingReceiver
    rate: float
    seconds: float
    next_id: int = 1


class Phases:
    """Runs the phases on one pipeline, measuring the CPU of every part in each; ``kafka`` reads when each quiet
    change reached the topic, which splits its latency into capture (commit -> Kafka) and delivery."""

    def __init__(self, pipeline: WalhookPipeline, quiet: Quiet, noisy_writer: PacedWriter,
                 kafka: KafkaTimestamps, server_pids: dict[str, int]) -> None:
        self.pipeline, self.quiet, self.noisy_writer, self.kafka = pipeline, quiet, noisy_writer, kafka
        pids = {name: (process.pid, False) for name, process in pipeline.processes.items()}
        pids.update({name: (pid, True) for name, pid in server_pids.items()})
        pids.update({f"writer{n}": (pid, False) for n, pid in enumerate([*quiet.writer.pids, *noisy_writer.pids])})
        pids["receivers"] = (os.getpid(), False)
        self.meter = CpuMeter(pids)

    async def alone(self) -> dict[str, Any]:
        """The quiet organization's load with nothing else going on."""
        return await self._quiet_phase()

    async def beside_noisy(self, rate: float, receiver: HangingReceiver, noisy: dict[str, Any],
                           warmup: float = WARMUP_SECONDS) -> dict[str, Any]:
        """The same load while the noisy organization writes ``rate`` changes/s and holds its connections."""
        settings = PublisherSettings()
        expected = min(settings.max_connections_per_organization,
                       noisy["hanging_integrations"] * settings.concurrency_per_integration)
        writing = asyncio.ensure_future(asyncio.to_thread(self.noisy_writer.run, rate,
                                                          self.quiet.seconds + warmup, NOISY_FIRST_ID))
        if not await receiver.wait_for_open(expected, warmup):
            await writing
            raise RuntimeError(f"the noisy organization held only {receiver.open} of {expected} connections "
                               f"within {warmup:g} s")
        open_at_start = receiver.open
        result = await self._quiet_phase()
        hanging = {**receiver.snapshot(), "open_at_start": open_at_start, "expected": expected}
        hanging["open_at_end"] = hanging.pop("open")
        start, committed = await writing
        load = latency_summary(committed, {}, start, rate, NOISY_FIRST_ID)
        parked, filtered = await asyncio.to_thread(_noisy_in_store, self.pipeline.store_dsn)
        result["noisy_load"] = {"written": load["written"], "achieved_rate": load["achieved_rate"],
                                "writer_max_behind_schedule_ms": load["writer_max_behind_schedule_ms"],
                                "hanging": hanging, "parked_in_store": parked,
                                "filtered_by_each_heavy_condition": filtered}
        return result

    async def _quiet_phase(self) -> dict[str, Any]:
        quiet = self.quiet
        self.meter.lap()
        started = time.monotonic()
        start, committed = await asyncio.to_thread(quiet.writer.run, quiet.rate, quiet.seconds, quiet.next_id)
        # A starved organization's changes trickle in: past the deadline the phase fails rather than wait for them.
        await quiet.receiver.wait_for(committed.keys(), stall_timeout=max(60.0, quiet.seconds),
                                      timeout=max(120.0, 2 * quiet.seconds))
        result = latency_summary(committed, quiet.receiver.arrivals, start, quiet.rate, quiet.next_id)
        result["missing"] = result["written"] - result["delivered"]  # the run fails on any, once it is written down
        result["busy_cores"] = _busy_cores(self.meter.lap(), time.monotonic() - started)
        stored = await store_times(self.pipeline.store_dsn, self.pipeline.integration_id)
        inserts = {i for i in committed if not is_update(i - quiet.next_id)}  # an update's record has another key
        result["stages"] = stages(committed, await self.kafka.collect(inserts),
                                  {i: started for i, (_, started) in stored.items()}, quiet.receiver.arrivals)
        result["max_ms_by_second"] = by_second(committed, quiet.receiver.arrivals, start)
        result.update(self.pipeline.peak_rss_mb())
        quiet.next_id += result["written"]
        return result


def stages(committed: dict[int, float], produced: dict[int, float], attempted: dict[int, float],
           arrivals: dict[int, float]) -> dict[str, Any]:
    """p50/p99/max in ms of commit -> Kafka record (capture and broker), Kafka record -> the attempt started
    (the publisher's intake, routing and lane) and attempt -> received (the request), over the inserts (an
    update's record carries the key of the row it changed)."""
    found = [i for i in committed if i in produced and i in attempted and i in arrivals]
    result: dict[str, Any] = {"events": len(found)}
    for name, start, end in (("commit->kafka", committed, produced), ("kafka->attempt", produced, attempted),
                             ("attempt->received", attempted, arrivals)):
        values = sorted((end[i] - start[i]) * 1000 for i in found)
        result[name] = {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99),
                        "max_ms": round(values[-1], 1) if values else None}
    return result


def by_second(committed: dict[int, float], arrivals: dict[int, float], start: float) -> list[float]:
    """The longest latency (ms) of the changes committed in each second of the phase: when the delays came."""
    return [round(max(second, default=0.0)) for second in latencies_by_window(committed, arrivals, start, 1.0)]


def _busy_cores(spent: dict[str, float], elapsed: float) -> dict[str, float]:
    """The cores each part kept busy on average; ``machine`` includes whatever else ran meanwhile."""
    return {name: round(cpu / elapsed, 2) for name, cpu in spent.items()}


def _noisy_in_store(store_dsn: str) -> tuple[int, int]:
    """The noisy organization's deliveries waiting in the store, and the fewest events a heavy condition
    filtered out (each ran on every noisy event that was routed)."""
    with psycopg.connect(store_dsn, autocommit=True) as conn:
        row = conn.execute(NOISY_IN_STORE, {"org": NOISY}).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
