"""What tracing costs the capture: events/s with ``[tracing]`` off, on but sampled out, and on, in one run.

One workload is written once (the capture benchmark's table and changes, ``bench/capture.py``) and
drained four times by the capture pipeline in this process, each from its own copy of one slot, so
every mode reads the same WAL into its own topic:

* ``before``: ``run_capture`` without a tracer, as every caller ran it before tracing existed;
* ``off``: the same with ``[tracing] enabled = false`` resolved through ``models.tracing`` (the
  process's path when tracing is configured off) - a second run of the untraced code, so the two
  together also show this machine's run-to-run noise;
* ``sampled_out``: tracing on with ``sample_ratio = 0``: spans are made but not recorded, the header
  is written;
* ``on``: tracing on, every change recorded; spans go to an exporter that drops them, so the cost
  measured is walhook's (spans, header, batching), not the network's.

Prints events/s per mode and each one's ratio to ``before``; writes JSON under bench/results/.

    python bench/tracing.py [--inserts 60000] [--updates 20000] [--small 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture import TABLE, confirmed, current_lsn, workload
from bench.memory import count_events
from cdc.pipeline import run_capture
from models.settings import EntitySettings, KafkaSettings, SourceSettings, TracingSettings
from models.tracing import tracer_for, tracer_provider
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "tracing.json"
MODES = {"before": None, "off": TracingSettings(enabled=False),
         "sampled_out": TracingSettings(enabled=True, sample_ratio=0.0), "on": TracingSettings(enabled=True)}
ENTITY = EntitySettings(table="bench_items", entity_key="items", entity_path="items/{id}", collection_path="items",
                        organization_column="org", update_time_column="updated_at")


class Dropped(SpanExporter):
    """Takes every span and sends it nowhere."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def prepare(dsn: str) -> None:
    """The table, its publication, and one slot per mode at the same LSN."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute("ALTER TABLE bench_items REPLICA IDENTITY FULL")
        conn.execute("CREATE PUBLICATION walhook FOR TABLE bench_items")
        first, *others = [f"bench_{mode}" for mode in MODES]
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [first])
        for slot in others:
            conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", [first, slot])


async def drain(dsn: str, bootstrap: str, topic: str, mode: str, end_lsn: str) -> float:
    """Seconds until the mode's slot confirmed ``end_lsn``."""
    settings = MODES[mode]
    provider = None if settings is None else tracer_provider(settings, "cdc", Dropped())
    source = SourceSettings(dsn=dsn, slot=f"bench_{mode}", status_interval=0.2, heartbeat_interval=0)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic=f"{topic}.{mode}")
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(run_capture(source, kafka, [ENTITY], stop,
                                           tracer=tracer_for(provider, "walhook.cdc")))
    while not await asyncio.to_thread(confirmed, dsn, f"bench_{mode}", end_lsn):
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    stop.set()
    await task
    if provider is not None:
        provider.shutdown()
    return seconds


def run_tracing_bench(dsn: str, bootstrap: str, inserts: int, updates: int, small: int,
                      topic: str = "bench.tracing") -> dict[str, Any]:
    """The benchmark on existing servers (a database of its own); returns the result record, with every mode's
    events counted on its topic by event id."""
    prepare(dsn)
    changes = workload(dsn, inserts, updates, small)
    end = current_lsn(dsn)
    seconds = {mode: asyncio.run(drain(dsn, bootstrap, topic, mode, end)) for mode in MODES}
    counted = {mode: asyncio.run(count_events(bootstrap, f"{topic}.{mode}", changes, timeout=max(60.0, changes / 5000)))
               for mode in MODES}
    return {"changes": changes, **{f"{mode}_changes_per_s": round(changes / s) for mode, s in seconds.items()},
            **{f"{mode}_ratio": round(seconds["before"] / s, 3) for mode, s in seconds.items()},
            **{f"{mode}_events_in_kafka": n for mode, n in counted.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=60_000)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000, help="single-row transactions")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-"))
    with LocalStack(workdir / "stack") as stack:
        result = run_tracing_bench(stack.dsn or "", stack.bootstrap_servers or "", args.inserts, args.updates,
                                   args.small)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['changes']} changes")
    for mode in MODES:
        rate, ratio = result[f"{mode}_changes_per_s"], result[f"{mode}_ratio"]
        print(f"{mode:<12}{rate:>10} changes/s   ratio to before {ratio:.3f}")


if __name__ == "__main__":
    main()
