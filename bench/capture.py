"""Capture throughput: walhook's CDC against pg_recvlogical, on the same WAL, in the same run.

Two slots start at the same LSN (the second is a copy of the first). A fixed workload is
written: inserts and updates of a table with 8 mixed-type columns (REPLICA IDENTITY FULL),
as a few large statements and as many small transactions. Then:

* ``pg_recvlogical`` (pgoutput, same publication, output to /dev/null) drains slot one up to
  the end LSN;
* ``walhook cdc`` drains slot two until every event is acknowledged by Kafka and the slot's
  confirmed LSN reaches the end. Its time includes starting the process (about a second of
  Python imports and connecting); its peak RSS is read from /proc.
* With ``--row-paths compiled,python`` (the default when the compiled row path was built), a
  second ``walhook cdc`` with ``[source] row_path = "python"`` drains a third copy of the slot,
  so both row paths are measured against the same reference in the same run.

Afterwards every event is counted on each topic by its event id. Prints changes/s and the
ratios; writes JSON under bench/results/.

    python bench/capture.py [--inserts 200000] [--updates 100000] [--small 20000] [--row-paths compiled,python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memory import count_events
from bench.procfs import status_mb
from cdc.rowpath import COMPILED_AVAILABLE
from walhook.stack import LocalStack, _postgres_bin_dir, spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "capture.json"
TABLE = """CREATE TABLE bench_items (id bigint PRIMARY KEY, org text NOT NULL, name text, amount numeric(12,2),
           ratio float8, active boolean, tags text[], payload jsonb, updated_at timestamptz)"""


def prepare(dsn: str) -> None:
    """The table, its publication, and two slots at the same LSN."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute("ALTER TABLE bench_items REPLICA IDENTITY FULL")
        conn.execute("CREATE PUBLICATION walhook FOR TABLE bench_items WITH (publish_via_partition_root = true)")
        conn.execute("SELECT pg_create_logical_replication_slot('bench_reference', 'pgoutput')")
        conn.execute("SELECT pg_copy_logical_replication_slot('bench_reference', 'bench_walhook')")
        conn.execute("SELECT pg_copy_logical_replication_slot('bench_reference', 'bench_python')")


def workload(dsn: str, inserts: int, updates: int, small: int) -> int:
    """Write the workload; returns the number of row changes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bench_items SELECT g, 'org_' || (g %% 10), 'item ' || g, g * 1.25, g / 7.0, "
                     "g %% 2 = 0, ARRAY['a', 'b'], jsonb_build_object('n', g), now() "
                     "FROM generate_series(1, %s) g", [inserts])
        conn.execute("UPDATE bench_items SET amount = amount + 1, updated_at = now() WHERE id <= %s", [updates])
        for n in range(small):  # many small transactions
            conn.execute("UPDATE bench_items SET ratio = ratio + 1 WHERE id = %s", [n % inserts + 1])
    return inserts + updates + small


def current_lsn(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]


def confirmed(dsn: str, slot: str, end_lsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                           "WHERE slot_name = %s", [end_lsn, slot]).fetchone()
    return bool(row and row[0])


def run_pg_recvlogical(dsn: str, end_lsn: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(_postgres_bin_dir() / "pg_recvlogical"), "-d", dsn, "--slot", "bench_reference", "--start",
                    "--endpos", end_lsn, "--no-loop", "-o", "proto_version=1", "-o", "publication_names=walhook",
                    "-f", "/dev/null"], check=True, capture_output=True)
    return time.perf_counter() - started


def run_walhook(dsn: str, bootstrap: str, topic: str, end_lsn: str, workdir: Path,
                slot: str = "bench_walhook", row_path: str = "auto") -> tuple[float, float]:
    """Seconds until ``slot`` confirmed ``end_lsn``, and the process's peak RSS in MB."""
    config = workdir / f"capture-{slot}.toml"
    config.write_text(f'[source]\ndsn = "{dsn}"\nslot = "{slot}"\nstatus_interval = 0.2\nrow_path = "{row_path}"\n'
                      f'heartbeat_interval = 0\n[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic = "{topic}"\n'
                      '[[entities]]\ntable = "bench_items"\nentity_key = "items"\n'
                      'entity_path = "items/{id}"\ncollection_path = "items"\norganization_column = "org"\n'
                      'update_time_column = "updated_at"\n')
    started = time.perf_counter()
    process = spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", "cdc", "--config", str(config)],
                    workdir / f"capture-{slot}.log")
    try:
        while not confirmed(dsn, slot, end_lsn):
            if process.poll() is not None:
                raise SystemExit(f"walhook cdc exited with {process.returncode}; see {workdir / f'capture-{slot}.log'}")
            time.sleep(0.05)
        return time.perf_counter() - started, status_mb(process.pid, "VmHWM")
    finally:
        stop_process(process)


def run_capture_bench(dsn: str, bootstrap: str, workdir: Path, inserts: int, updates: int, small: int,
                      topic: str = "bench.capture", row_paths: tuple[str, ...] = ("auto",)) -> dict[str, Any]:
    """The benchmark on existing servers (a database of its own); returns the result record.

    The first of ``row_paths`` is the headline (``walhook_*``); a second one, ``python``, is also
    measured on its own slot and topic (``python_*``)."""
    prepare(dsn)
    changes = workload(dsn, inserts, updates, small)
    end = current_lsn(dsn)
    reference = run_pg_recvlogical(dsn, end)
    walhook, peak_rss = run_walhook(dsn, bootstrap, topic, end, workdir, row_path=row_paths[0])
    counted = asyncio.run(count_events(bootstrap, topic, changes, timeout=max(60.0, changes / 5000)))
    result = {"changes": changes, "events_in_kafka": counted, "row_path": row_paths[0],
              "pg_recvlogical_s": round(reference, 2), "walhook_s": round(walhook, 2),
              "pg_recvlogical_changes_per_s": round(changes / reference),
              "walhook_changes_per_s": round(changes / walhook), "ratio": round(reference / walhook, 3),
              "walhook_peak_rss_mb": round(peak_rss, 1)}
    if "python" in row_paths[1:]:
        seconds, rss = run_walhook(dsn, bootstrap, f"{topic}.python", end, workdir, "bench_python", "python")
        result.update({"python_s": round(seconds, 2), "python_changes_per_s": round(changes / seconds),
                       "python_ratio": round(reference / seconds, 3), "python_peak_rss_mb": round(rss, 1),
                       "python_events_in_kafka": asyncio.run(count_events(
                           bootstrap, f"{topic}.python", changes, timeout=max(60.0, changes / 5000)))})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=200_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000, help="single-row transactions")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--row-paths", default="compiled,python" if COMPILED_AVAILABLE else "python",
                        help="the row path(s) walhook cdc runs with, headline first")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-"))
    with LocalStack(workdir / "stack") as stack:
        result = run_capture_bench(stack.dsn or "", stack.bootstrap_servers or "", workdir, args.inserts,
                                   args.updates, args.small, row_paths=tuple(args.row_paths.split(",")))
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    changes = result["changes"]
    print(f"{'':<16}{'seconds':>9}{'changes/s':>12}{'peak RSS MB':>13}")
    print(f"{'pg_recvlogical':<16}{result['pg_recvlogical_s']:>9.2f}{result['pg_recvlogical_changes_per_s']:>12}")
    print(f"{'walhook ' + result['row_path']:<16}{result['walhook_s']:>9.2f}{result['walhook_changes_per_s']:>12}"
          f"{result['walhook_peak_rss_mb']:>13}")
    if "python_s" in result:
        print(f"{'walhook python':<16}{result['python_s']:>9.2f}{result['python_changes_per_s']:>12}"
              f"{result['python_peak_rss_mb']:>13}")
        print(f"ratio walhook python / pg_recvlogical: {result['python_ratio']:.3f}   "
              f"({result['python_events_in_kafka']} events counted in Kafka)")
    print(f"ratio walhook {result['row_path']} / pg_recvlogical: {result['ratio']:.3f}   ({changes} changes, "
          f"{result['events_in_kafka']} events counted in Kafka)")


if __name__ == "__main__":
    main()
