"""Backfill: rows/s, and what a running backfill costs the stream's latency.

A table of ``--rows`` existing rows and a second, streamed table. ``walhook cdc`` runs with a store
(in the same database). A paced writer commits ``--rate`` single-row transactions per second to the
streamed table for ``--seconds`` without a backfill, then again while a backfill of the whole table
runs (until it is done, at least ``--seconds``). A Kafka consumer stamps each streamed event when it
arrives: latency = arrival - commit time (``eventTimestamp``), the same clock. It prints the
backfill's rows/s (from the job's start to its end, as the store recorded them), the streamed
changes' p50 / p99 / max latency in both phases, and the capture's peak RSS; JSON under bench/results/.

    python bench/backfill.py [--rows 1000000] [--rate 200] [--seconds 10] [--pace ROWS_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procfs import status_mb
from publisher.store import Store
from walhook.demo import wait_for_streaming
from walhook.stack import LocalStack, free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "backfill.json"
CONFIG = """[source]
dsn = "{dsn}"
status_interval = 0.2
metrics_address = "127.0.0.1:{metrics_port}"
[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
[store]
dsn = "{dsn}"
[backfill]
poll_interval = 0.2
max_rows_per_second = {pace}
[[entities]]
table = "bench_rows"
entity_key = "rows"
entity_path = "rows/{{id}}"
collection_path = "rows"
organization_column = "org"
[[entities]]
table = "bench_ticks"
entity_key = "ticks"
entity_path = "ticks/{{id}}"
collection_path = "ticks"
organization_column = "org"
"""


def prepare(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_rows (id bigint PRIMARY KEY, org text NOT NULL, name text, amount numeric, "
                     "tags text[], payload jsonb, updated_at timestamptz)")
        conn.execute("INSERT INTO bench_rows SELECT g, 'org_' || (g %% 10), 'item ' || g, g * 1.25, "
                     "ARRAY['a', 'b'], jsonb_build_object('n', g), now() FROM generate_series(1, %s) g", [rows])
        conn.execute("ANALYZE bench_rows")
        conn.execute("CREATE TABLE bench_ticks (id bigserial PRIMARY KEY, org text NOT NULL)")


class Arrivals:
    """Reads the topic as it is written; keeps each streamed event's latency and counts the reads."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                          enable_auto_commit=False, group_id=None, fetch_max_wait_ms=10,
                                          max_partition_fetch_bytes=8 << 20)
        self.latencies: list[tuple[float, float]] = []  # (commit time, seconds from commit to arrival)
        self.reads = 0

    async def run(self) -> None:
        await self._consumer.start()
        try:
            while True:
                for records in (await self._consumer.getmany(timeout_ms=100, max_records=20_000)).values():
                    now = time.time()
                    for record in records:
                        self._note(record, now)
        finally:
            await self._consumer.stop()

    def _note(self, record: Any, now: float) -> None:
        headers = dict(record.headers)
        if headers.get("walhook-entity-key") != b"ticks":
            self.reads += headers.get("walhook-operation-type") == b"read"
            return
        stamp = json.loads(record.value)["eventTimestamp"]
        committed = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        self.latencies.append((committed, now - committed))

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the changes committed in [start, end)."""
        return [latency for committed, latency in self.latencies if start <= committed < end]


async def tick(dsn: str, rate: float, until: asyncio.Event) -> int:
    """Commit ``rate`` single-row transactions per second until ``until`` is set; returns how many."""
    written = 0
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not until.is_set():
            await conn.execute("INSERT INTO bench_ticks (org) VALUES ('org_1')")
            written += 1
            await asyncio.sleep(max(0.0, started + written / rate - time.monotonic()))
    return written


async def longest_hold(port: int) -> float:
    """The capture's own figure: the longest a backfill held the stream (a decision or a slice), in seconds."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    line = next(line for line in text.splitlines() if line.startswith("walhook_cdc_backfill_longest_hold_seconds "))
    return float(line.split()[1])


def figures(latencies: list[float]) -> dict[str, float | int | None]:
    if not latencies:
        return {"events": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"events": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}


async def run_backfill_bench(dsn: str, bootstrap: str, workdir: Path, rows: int, rate: float, seconds: float,
                             topic: str = "bench.backfill", pace: float = 0) -> dict[str, Any]:
    """The benchmark on existing servers (a database of its own); returns the result record."""
    prepare(dsn, rows)
    config = workdir / "backfill.toml"
    port = free_port()
    config.write_text(CONFIG.format(dsn=dsn, bootstrap=bootstrap, topic=topic, metrics_port=port, pace=pace))
    process = spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", "cdc", "--config", str(config)],
                    workdir / "backfill-cdc.log")
    arrivals = Arrivals(bootstrap, topic)
    consuming = asyncio.create_task(arrivals.run())
    try:
        await wait_for_streaming(dsn, "walhook", process, timeout=60)
        async with Store(dsn) as store:
            result = await _phases(dsn, store, arrivals, process.pid, rows, rate, seconds)
        return {**result, "max_rows_per_second": pace, "longest_hold_ms": round(await longest_hold(port) * 1000, 1)}
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        stop_process(process)


async def _phases(dsn: str, store: Store, arrivals: Arrivals, pid: int, rows: int, rate: float,
                  seconds: float) -> dict[str, Any]:
    quiet_start = time.time()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    quiet_written = await tick(dsn, rate, stop)
    quiet_end = time.time()
    job = await store.create_backfill("public.bench_rows")
    stop = asyncio.Event()
    writing = asyncio.create_task(tick(dsn, rate, stop))
    deadline = time.monotonic() + max(seconds, 10 + rows / 1000)
    while not (job := await store.backfill(None, job.id)).finished and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(max(0.0, quiet_start + 2 * seconds - time.time()))
    stop.set()
    busy_written = await writing
    busy_end = time.time()
    await asyncio.sleep(2.0)  # the last streamed events arrive
    assert job.finished_at is not None, f"backfill did not finish: {job}"
    elapsed = (job.finished_at - job.created_at).total_seconds()
    return {"rows": rows, "backfill_state": job.state, "rows_read": job.rows_read, "rows_published": job.rows_published,
            "reads_in_kafka": arrivals.reads, "backfill_s": round(elapsed, 2),
            "rows_per_s": round(job.rows_read / elapsed) if elapsed else None, "chunk_rows": job.chunk_rows,
            "rate": rate, "without_backfill": {"written": quiet_written, **figures(arrivals.between(quiet_start,
                                                                                                  quiet_end))},
            "with_backfill": {"written": busy_written, **figures(arrivals.between(quiet_end, busy_end))},
            "cdc_peak_rss_mb": round(status_mb(pid, "VmHWM"), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=200.0, help="streamed transactions per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the phase without a backfill")
    parser.add_argument("--pace", type=float, default=0, help="[backfill] max_rows_per_second (0: no limit)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-"))
    with LocalStack(workdir / "stack") as stack:
        result = asyncio.run(run_backfill_bench(stack.dsn or "", stack.bootstrap_servers or "", workdir, args.rows,
                                                args.rate, args.seconds, pace=args.pace))
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"backfill of {result['rows_read']:,} rows: {result['backfill_s']} s, {result['rows_per_s']:,} rows/s "
          f"({result['backfill_state']}, last chunk {result['chunk_rows']} "
          f"rows), capture peak RSS {result['cdc_peak_rss_mb']} MB, longest the backfill held the stream: "
          f"{result['longest_hold_ms']} ms")
    print(f"{'streamed changes':<24}{'events':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for phase in ("without_backfill", "with_backfill"):
        row = result[phase]
        print(f"{phase.replace('_', ' '):<24}{row['events']:>8}{row['p50_ms']!s:>9}{row['p99_ms']!s:>9}"
              f"{row['max_ms']!s:>9}")


if __name__ == "__main__":
    main()
