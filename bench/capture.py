"""Capture throughput: walhook's CDC against pg_recvlogical, on the same WAL, in the same run.

Two slots start at the same LSN (the second is a copy of the first). A fixed workload is
written: inserts and updates of a table with 8 mixed-type columns (REPLICA IDENTITY FULL),
as a few large statements and as many small transactions. Then:

* ``pg_recvlogical`` (pgoutput, same publication, output to /dev/null) drains slot one up to
  the end LSN;
* ``walhook cdc`` drains slot two until every event is acknowledged by Kafka and the slot's
  confirmed LSN reaches the end.

Prints changes/s for both and the ratio; writes JSON under bench/results/.

    python bench/capture.py [--inserts 200000] [--updates 100000] [--small 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from walhook.stack import LocalStack, _postgres_bin_dir

ROOT = Path(__file__).resolve().parents[1]
TABLE = """CREATE TABLE bench_items (id bigint PRIMARY KEY, org text NOT NULL, name text, amount numeric(12,2),
           ratio float8, active boolean, tags text[], payload jsonb, updated_at timestamptz)"""


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


def confirmed(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn >= pg_current_wal_lsn() - 64 FROM pg_replication_slots "
                           "WHERE slot_name = %s", [slot]).fetchone()
    return bool(row and row[0])


def run_pg_recvlogical(dsn: str, end_lsn: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(_postgres_bin_dir() / "pg_recvlogical"), "-d", dsn, "--slot", "bench_reference", "--start",
                    "--endpos", end_lsn, "--no-loop", "-o", "proto_version=1", "-o", "publication_names=walhook",
                    "-f", "/dev/null"], check=True, capture_output=True)
    return time.perf_counter() - started


def run_walhook(dsn: str, bootstrap: str, workdir: Path) -> float:
    config = workdir / "walhook.toml"
    config.write_text(f'[source]\ndsn = "{dsn}"\nslot = "bench_walhook"\nstatus_interval = 0.2\n'
                      f'heartbeat_interval = 0\n[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic = "bench"\n'
                      'linger_ms = 20\n[[entities]]\ntable = "bench_items"\nentity_key = "items"\n'
                      'entity_path = "items/{id}"\ncollection_path = "items"\norganization_column = "org"\n'
                      'update_time_column = "updated_at"\n')
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "walhook", "--log-level", "WARNING", "cdc", "--config",
                                str(config)], cwd=ROOT)
    try:
        while not confirmed(dsn, "bench_walhook"):
            if process.poll() is not None:
                raise SystemExit(f"walhook cdc exited with {process.returncode}")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=200_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000, help="single-row transactions")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-"))
    with LocalStack(workdir / "stack") as stack:
        dsn, bootstrap = stack.dsn or "", stack.bootstrap_servers or ""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
            conn.execute("ALTER TABLE bench_items REPLICA IDENTITY FULL")
            conn.execute("CREATE PUBLICATION walhook FOR TABLE bench_items WITH (publish_via_partition_root = true)")
            conn.execute("SELECT pg_create_logical_replication_slot('bench_reference', 'pgoutput')")
            conn.execute("SELECT pg_copy_logical_replication_slot('bench_reference', 'bench_walhook')")
        changes = workload(dsn, args.inserts, args.updates, args.small)
        end = current_lsn(dsn)
        reference = run_pg_recvlogical(dsn, end)
        walhook = run_walhook(dsn, bootstrap, workdir)
    result = {"changes": changes, "pg_recvlogical_s": round(reference, 2), "walhook_s": round(walhook, 2),
              "pg_recvlogical_changes_per_s": round(changes / reference),
              "walhook_changes_per_s": round(changes / walhook), "ratio": round(reference / walhook, 3)}
    out = ROOT / "bench" / "results" / "capture.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'':<16}{'seconds':>9}{'changes/s':>12}")
    print(f"{'pg_recvlogical':<16}{reference:>9.2f}{changes / reference:>12.0f}")
    print(f"{'walhook cdc':<16}{walhook:>9.2f}{changes / walhook:>12.0f}")
    print(f"ratio walhook / pg_recvlogical: {reference / walhook:.3f}   ({changes} changes)")


if __name__ == "__main__":
    main()
