"""Memory: one very large transaction through ``walhook cdc``, its RSS against the bound of docs/concepts/guarantees.md.

A real ``walhook cdc`` process streams a table with 9 mixed-type columns. One transaction
inserts ``--rows`` rows (default 1,000,000). Postgres decodes the whole transaction before it
sends any of it (pgoutput protocol 1), then the CDC produces every event to Kafka while
its RSS is sampled. Done means the slot's confirmed LSN passed the commit: the CDC only
confirms what Kafka acknowledged. Every event is then counted by consuming the topic.

Prints the peak RSS against the bound and the events/s; writes JSON under bench/results/.

    python bench/memory.py [--rows 1000000] [--bound-mb 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script, only bench/ itself is on the path: the repository root is needed too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from aiokafka import AIOKafkaConsumer

from bench.procfs import status_mb
from walhook.demo import wait_for_streaming
from walhook.stack import LocalStack, spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "memory.json"
RSS_BOUND_MB = 300  # the bound docs/concepts/guarantees.md states for the CDC process
SLOT = "bench_memory"
TABLE = """CREATE TABLE bench_memory (id bigint PRIMARY KEY, org text NOT NULL, name text, amount numeric(12,2),
           ratio float8, active boolean, tags text[], payload jsonb, updated_at timestamptz)"""
INSERT = """INSERT INTO bench_memory SELECT g, 'org_' || (g %% 10), 'item ' || g, g * 1.25, g / 7.0, g %% 2 = 0,
            ARRAY['a', 'b'], jsonb_build_object('n', g), now() FROM generate_series(1, %s) g"""


def config_text(dsn: str, bootstrap_servers: str, topic: str) -> str:
    """The CDC's TOML: defaults except the names, so the bound is checked as shipped."""
    return (f'[source]\ndsn = "{dsn}"\nslot = "{SLOT}"\npublication = "{SLOT}"\n'
            f'[kafka]\nbootstrap_servers = "{bootstrap_servers}"\ntopic = "{topic}"\n'
            '[[entities]]\ntable = "public.bench_memory"\nentity_key = "items"\nentity_path = "items/{id}"\n'
            'collection_path = "items"\norganization_column = "org"\nupdate_time_column = "updated_at"\n')


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds until stopped; keeps the largest."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_mb = 0.0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.max_mb = max(self.max_mb, status_mb(self.pid, "VmRSS"))
            except (OSError, ValueError):  # the process ended
                return
            self.samples += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def write_transaction(dsn: str, rows: int) -> tuple[float, str]:
    """Insert ``rows`` rows in one transaction; returns (seconds it took, WAL position after the commit)."""
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        conn.execute(INSERT, [rows])
    with psycopg.connect(dsn) as conn:
        lsn = str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
    return time.monotonic() - started, lsn


def wait_confirmed(dsn: str, lsn: str, cdc: Any, timeout: float) -> float:
    """Block until the slot's confirmed LSN reaches ``lsn``; returns the seconds waited."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                               "WHERE slot_name = %s", [lsn, SLOT]).fetchone()
            if row and row[0]:
                return time.monotonic() - started
            if cdc.poll() is not None:
                raise RuntimeError(f"walhook cdc exited with code {cdc.returncode}; see its log")
            time.sleep(0.05)
    raise TimeoutError(f"the slot did not confirm {lsn} within {timeout:.0f}s")


async def count_events(bootstrap_servers: str, topic: str, expected: int, timeout: float) -> int:
    """Distinct event ids on the topic, read from the start (duplicates from a retry count once)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                seen.update(dict(record.headers)["walhook-event-id"] for record in records)
    finally:
        await consumer.stop()
    return len(seen)


def run_memory(dsn: str, bootstrap_servers: str, workdir: Path, rows: int, topic: str = "bench.memory",
               timeout: float = 1800.0) -> dict[str, Any]:
    """The benchmark on existing servers: one ``rows``-row transaction through a fresh CDC process."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    config = workdir / "memory.toml"
    config.write_text(config_text(dsn, bootstrap_servers, topic))
    cdc = spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", "cdc", "--config", str(config)],
                workdir / "memory-cdc.log")
    try:
        asyncio.run(wait_for_streaming(dsn, SLOT, cdc))
        baseline = status_mb(cdc.pid, "VmRSS")
        sampler = RssSampler(cdc.pid)
        sampler.start()
        write_seconds, lsn = write_transaction(dsn, rows)
        drain_seconds = wait_confirmed(dsn, lsn, cdc, timeout)
        sampler.stop()
        peak = status_mb(cdc.pid, "VmHWM")
    finally:
        stop_process(cdc)
    counted = asyncio.run(count_events(bootstrap_servers, topic, rows, timeout=max(120.0, rows / 5000)))
    return {"rows": rows, "events_in_kafka": counted, "write_seconds": round(write_seconds, 2),
            "commit_to_confirmed_seconds": round(drain_seconds, 2), "events_per_s": round(rows / drain_seconds),
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
            "max_sampled_rss_mb": round(sampler.max_mb, 1), "rss_samples": sampler.samples,
            "bound_mb": RSS_BOUND_MB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-memory-"))
    with LocalStack(workdir / "stack") as stack:
        result = run_memory(stack.dsn or "", stack.bootstrap_servers or "", workdir, args.rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    verdict = "within" if result["peak_rss_mb"] <= RSS_BOUND_MB else "OVER"
    print(f"{'rows':>9}{'in Kafka':>10}{'write s':>9}{'drain s':>9}{'events/s':>10}{'peak RSS MB':>13}{'bound MB':>10}")
    print(f"{result['rows']:>9}{result['events_in_kafka']:>10}{result['write_seconds']:>9}"
          f"{result['commit_to_confirmed_seconds']:>9}{result['events_per_s']:>10}{result['peak_rss_mb']:>13}"
          f"{RSS_BOUND_MB:>10}   ({verdict} the bound; idle RSS {result['baseline_rss_mb']} MB)")


if __name__ == "__main__":
    main()
