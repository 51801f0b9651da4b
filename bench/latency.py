"""End-to-end latency: commit -> signed webhook received, at fixed write rates.

Real ``walhook cdc`` and ``walhook publisher`` processes run on a local stack. One
organization has one integration pointing at a receiver on 127.0.0.1 that notes each
request's arrival time as soon as it arrives, then verifies its signature with the
``standardwebhooks`` library. A paced writer (``paced_writer``) commits single-row
INSERT transactions at each rate in turn, on an absolute schedule, and notes when each
commit returned. Between rates the benchmark waits until every event arrived.

Per rate: rows written and webhooks delivered (they must be equal), latency p50/p99/max,
the achieved write rate, where the time goes (``breakdown``) and the peak RSS of both
processes. Prints a table; writes JSON under bench/results/.

    python bench/latency.py [--rates 500 2000 5000] [--seconds 60] [--connections 2] [--kafka HOST:PORT]
        [--tuned] [--set kafka.linger_ms=5]

The configuration is the defaults a user gets (``--tuned``: the settings earlier runs tuned);
every fifth transaction is an UPDATE of an earlier row. Per rate it also prints the rows
written to the store per event, from Postgres's own table statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, only bench/ itself is on the path: the repository root is needed too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.latency_breakdown import KafkaTimestamps, stage_breakdown
from bench.latency_pipeline import TABLE, WalhookPipeline, percentile, stack_for_pipeline
from bench.latency_receiver import TimingReceiver
from bench.paced_writer import PacedWriter, is_update
from bench.procfs import CpuMeter
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "latency.json"


async def measure_rate(pipeline: WalhookPipeline, writer: PacedWriter, receiver: TimingReceiver,
                       kafka: KafkaTimestamps, meter: CpuMeter, rate: float, seconds: float,
                       first_id: int) -> dict[str, Any]:
    """Write at ``rate`` for ``seconds``, wait for every webhook, and summarise what happened."""
    meter.lap()
    rows_before = await asyncio.to_thread(store_rows_written, pipeline.store_dsn)
    started = time.monotonic()
    start, committed = await asyncio.to_thread(writer.run, rate, seconds, first_id)
    await receiver.wait_for(committed.keys(), stall_timeout=max(60.0, seconds))
    result = {"rate": rate, "seconds": seconds, **latency_summary(committed, receiver.arrivals, start, rate, first_id),
              **_cpu_summary(meter.lap(), time.monotonic() - started, len(committed))}
    await asyncio.sleep(STATS_FLUSH_SECONDS)  # backends report their table statistics about once a second
    written = await asyncio.to_thread(store_rows_written, pipeline.store_dsn) - rows_before
    result["store_rows_per_event"] = round(written / max(1, len(committed)), 2)
    # Only inserts are split: an update's record has the key of the row it changed, not its own id.
    inserts = {row_id: at for row_id, at in committed.items() if not is_update(row_id - first_id)}
    result["breakdown"] = await stage_breakdown(pipeline, kafka, receiver, inserts)
    result.update(pipeline.peak_rss_mb())
    return result


STATS_FLUSH_SECONDS = 2.0


def store_rows_written(store_dsn: str) -> int:
    """Rows inserted, updated and deleted in the store's tables so far, from Postgres's own statistics."""
    with psycopg.connect(store_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                           "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchone()
    return int(row[0]) if row else 0


def latency_summary(committed: dict[int, float], arrivals: dict[int, float], start: float, rate: float,
                    first_id: int) -> dict[str, Any]:
    """Counts, the achieved write rate, how late the writer ever was, and latency percentiles in ms."""
    latencies = sorted((arrivals[i] - t) * 1000 for i, t in committed.items() if i in arrivals)
    lateness = max(t - (start + (i - first_id) / rate) for i, t in committed.items())
    return {"written": len(committed), "delivered": len(latencies),
            "achieved_rate": round(len(committed) / (max(committed.values()) - start), 1),
            "writer_max_behind_schedule_ms": round(lateness * 1000, 1),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "p99_ms_by_window": windowed_p99(committed, arrivals, start)}


WINDOW_SECONDS = 10.0


def windowed_p99(committed: dict[int, float], arrivals: dict[int, float], start: float) -> list[float | None]:
    """p99 of the changes committed in each ``WINDOW_SECONDS`` of the run: a figure that climbs from window to
    window is a backlog growing, one spike a hiccup."""
    return [percentile(sorted(window), 0.99)
            for window in latencies_by_window(committed, arrivals, start, WINDOW_SECONDS)]


def latencies_by_window(committed: dict[int, float], arrivals: dict[int, float], start: float,
                        seconds: float) -> list[list[float]]:
    """The latencies (ms) of the changes committed in each ``seconds`` of the run, window by window from
    ``start`` (an empty list for a window with none; a change that has not arrived is left out)."""
    windows: dict[int, list[float]] = {}
    for i, t in committed.items():
        if i in arrivals:
            windows.setdefault(int((t - start) // seconds), []).append((arrivals[i] - t) * 1000)
    return [windows.get(n, []) for n in range(max(windows, default=-1) + 1)]


def _cpu_summary(spent: dict[str, float], elapsed: float, events: int) -> dict[str, Any]:
    """CPU per event of each part, the cores they kept busy together, and the whole machine's busy cores
    (which includes whatever else ran meanwhile)."""
    machine = spent.pop("machine")
    return {"machine_busy_cores": round(machine / elapsed, 2),
            "pipeline_busy_cores": round(sum(spent.values()) / elapsed, 2),
            "cpu_ms_per_event": {name: round(cpu * 1000 / max(1, events), 3) for name, cpu in spent.items()}}


async def run_latency(dsn: str, store_dsn: str, bootstrap_servers: str, workdir: Path, rates: list[float],
                      seconds: float, connections: int = 2, topic: str = "bench.latency",
                      server_pids: dict[str, int] | None = None, tuned: bool = False,
                      settings: Sequence[str] = ()) -> dict[str, Any]:
    """The benchmark on existing servers: one pipeline, every rate in turn; returns the JSON-ready result.

    ``server_pids`` (e.g. ``{"postgres": pid, "kafka": pid}``) adds the servers' CPU time to each run.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    runs: list[dict[str, Any]] = []
    async with TimingReceiver() as receiver, \
            WalhookPipeline(dsn, store_dsn, bootstrap_servers, topic, workdir, tuned, settings) as pipeline:
        receiver.secret = await pipeline.register(receiver.url)
        await pipeline.start()
        async with KafkaTimestamps(bootstrap_servers, topic) as kafka:
            with PacedWriter(dsn, "bench_latency", connections) as writer:
                meter = _meter(pipeline, writer, server_pids or {})
                first_id = 1
                for rate in rates:
                    runs.append(await measure_rate(pipeline, writer, receiver, kafka, meter, rate, seconds,
                                                   first_id))
                    first_id += runs[-1]["written"]
        return {"runs": runs, "verified": receiver.verified, "rejected": receiver.rejected,
                "duplicates": receiver.duplicates, "conditions": _conditions(connections, pipeline.config_text)}


def _meter(pipeline: WalhookPipeline, writer: PacedWriter, server_pids: dict[str, int]) -> CpuMeter:
    """CPU of every part: walhook's two processes, the servers (Postgres with its backends), the writer
    processes and this process (the receiver)."""
    pids = {name: (process.pid, False) for name, process in pipeline.processes.items()}
    pids.update({name: (pid, True) for name, pid in server_pids.items()})
    pids.update({f"writer{n}": (pid, False) for n, pid in enumerate(writer.pids)})
    pids["receiver"] = (os.getpid(), False)
    return CpuMeter(pids)


def _conditions(connections: int, config: str) -> dict[str, Any]:
    """What the numbers depend on: the machine, its load, the writer and walhook's configuration."""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "writer": f"{connections} processes, one libpq connection each in pipeline mode, "
                      "one Sync (= one committed transaction) per row; every fifth an UPDATE of an earlier row",
            "config": config}


def print_table(result: dict[str, Any]) -> None:
    """The runs as a table, then where the time went at each rate."""
    print(f"{'rate/s':>7}{'achieved':>10}{'written':>9}{'delivered':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'cdc MB':>8}{'pub MB':>8}{'rows/event':>11}")
    for run in result["runs"]:
        cells = [_cell(run[key]) for key in ("written", "delivered", "p50_ms", "p99_ms", "max_ms")]
        print(f"{run['rate']:>7.0f}{run['achieved_rate']:>10.0f}{cells[0]:>9}{cells[1]:>10}{cells[2]:>9}{cells[3]:>9}"
              f"{cells[4]:>9}{run['cdc_peak_rss_mb']:>8.0f}{run['publisher_peak_rss_mb']:>8.0f}"
              f"{run['store_rows_per_event']:>11}")
    print(f"verified {result['verified']}, rejected {result['rejected']}, duplicates {result['duplicates']}")
    for run in result["runs"]:
        stages = ", ".join(f"{name} {v['p50_ms']}/{v['p99_ms']}" for name, v in run["breakdown"].items()
                           if isinstance(v, dict))
        cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in run["cpu_ms_per_event"].items())
        print(f"{run['rate']:>7.0f}/s  stage p50/p99 ms: {stages}")
        print(f"{'':>9}p99 ms per {WINDOW_SECONDS:g} s of the run: "
              f"{', '.join(_cell(p99) for p99 in run.get('p99_ms_by_window', []))}")
        print(f"{'':>9}CPU ms per event: {cpu}; busy cores: these {run['pipeline_busy_cores']}, "
              f"whole machine {run['machine_busy_cores']} of {os.cpu_count()}")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=2, help="writer processes (one connection each)")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--tuned", action="store_true", help="the settings earlier runs tuned for this benchmark "
                                                             "instead of the defaults a user gets")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting beside the defaults, repeatable, e.g. kafka.linger_ms=5")
    parser.add_argument("--kafka", help="bootstrap servers of a broker to use instead of the bundled tansu, "
                                        "e.g. Apache Kafka from docker/compose.yaml (see docs/benchmarks.md: tansu's "
                                        "fetches slow down as a partition's record batches pile up)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-latency-"))
    with LocalStack(workdir / "stack", bootstrap_servers=args.kafka) as stack:
        dsn, store_dsn, servers = stack_for_pipeline(stack)
        started = time.monotonic()
        result = asyncio.run(run_latency(dsn, store_dsn, stack.bootstrap_servers or "", workdir, args.rates,
                                         args.seconds, args.connections, server_pids=servers, tuned=args.tuned,
                                         settings=args.settings))
    result["conditions"]["wall_seconds"] = round(time.monotonic() - started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
