"""Fairness: how much a noisy organization delays a quiet one's live delivery (target: at most 1 s).

Real ``walhook cdc`` and ``walhook publisher`` processes run on a local stack with the defaults a
user gets. The quiet organization has one integration pointing at a receiver on 127.0.0.1 that
notes each request's arrival, then verifies its signature with the ``standardwebhooks`` library;
a paced writer commits its changes (``--quiet-rate`` single-row transactions/s, a fifth of them
updates) to a table of its own.

1. *Alone*: the quiet organization's commit -> received latency, the reference of the same run.
2. *Beside a noisy organization*: the same quiet load while another organization
   (``bench/noisy_organization.py``, created through the API's actions so its limits apply) commits
   ``--noisy-rate`` changes/s to its own table, routed through as many of the heaviest conditions
   as ``[api] max_condition_cost_per_organization`` allows, and to ``--hanging`` integrations whose
   endpoints hold every connection open and never answer. The quiet phase starts once the
   publisher holds all the connections the noisy organization may open.

Prints the quiet latency of each phase and the delay the noisy organization added (p50, p99, max);
writes bench/results/fairness.json. Every quiet change must arrive in both phases, or it fails (after
writing the figures, with the missing ones counted).

    python bench/fairness.py [--seconds 60] [--quiet-rate 200] [--noisy-rate 1000] [--hanging 40]
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, only bench/ itself is on the path: the repository root is needed too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.fairness_phases import WARMUP_SECONDS, Phases, Quiet
from bench.hanging_receiver import HangingReceiver
from bench.latency_breakdown import KafkaTimestamps
from bench.latency_pipeline import WalhookPipeline, stack_for_pipeline
from bench.latency_receiver import TimingReceiver
from bench.noisy_organization import ENTITY_KEY, NOISY, create_noisy, table_sql
from bench.noisy_organization import TABLE as NOISY_TABLE
from bench.paced_writer import PacedWriter
from control.actions import create_integration
from control.actor import Actor
from models.settings import ApiSettings
from publisher.store import Store
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "fairness.json"
TARGET_MS = 1000.0
SLOT = "bench_fairness"
QUIET = "quiet"
QUIET_TABLE = "bench_quiet"
QUIET_KEY = "quiet_items"


def config_text(dsn: str, store_dsn: str, bootstrap_servers: str, topic: str) -> str:
    """Both processes' TOML: the defaults a user gets, two tables, each of one organization."""
    entities = "".join(f'''
[[entities]]
table = "public.{table}"
entity_key = "{key}"
entity_path = "{key}/{{id}}"
collection_path = "{key}"
organization = "{organization}"
create_time_column = "created_at"
''' for table, key, organization in ((QUIET_TABLE, QUIET_KEY, QUIET), (NOISY_TABLE, ENTITY_KEY, NOISY)))
    return f'''[source]
dsn = "{dsn}"
slot = "{SLOT}"
publication = "{SLOT}"

[kafka]
bootstrap_servers = "{bootstrap_servers}"
topic = "{topic}"
consumer_group = "{topic}.publisher"

[store]
dsn = "{store_dsn}"
plaintext_secrets = true

[publisher]
allowed_networks = ["127.0.0.1/32"]  # the receivers run on this machine
{entities}'''


def create_tables(dsn: str, hanging: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE IF NOT EXISTS {QUIET_TABLE} (id bigint PRIMARY KEY, org text NOT NULL,
                         name text, amount numeric(14,2), note text, created_at timestamptz NOT NULL DEFAULT now())""")
        conn.execute(table_sql(hanging))


async def register_quiet(store_dsn: str, url: str) -> tuple[str, int]:
    """The quiet organization with its one integration (every change of its table): its secret and the id."""
    async with Store(store_dsn) as store:
        secret = await store.add_organization(QUIET)
        integration_id = await create_integration(store, ApiSettings(), Actor.organization(QUIET), QUIET, url,
                                                  [f"{QUIET_KEY}:*"])
    return secret, integration_id


async def run_fairness(dsn: str, store_dsn: str, bootstrap_servers: str, workdir: Path, seconds: float,
                       quiet_rate: float = 200, noisy_rate: float = 1000, hanging: int = 40,
                       topic: str = "bench.fairness", server_pids: dict[str, int] | None = None,
                       warmup: float = WARMUP_SECONDS, heavy_conditions: bool = True) -> dict[str, Any]:
    """The benchmark on existing servers: the quiet organization alone, then beside the noisy one.

    ``server_pids`` (e.g. ``{"postgres": pid, "kafka": pid}``) adds the servers' CPU to each phase; ``warmup``
    is how long the noisy organization may take to fill its connections before the second phase; without
    ``heavy_conditions`` the noisy organization has only its hanging integrations."""
    create_tables(dsn, hanging)
    config = config_text(dsn, store_dsn, bootstrap_servers, topic)
    async with TimingReceiver() as receiver, HangingReceiver() as hanging_receiver, \
            WalhookPipeline(dsn, store_dsn, bootstrap_servers, topic, workdir, config=config, slot=SLOT) as pipeline:
        receiver.secret, pipeline.integration_id = await register_quiet(store_dsn, receiver.url)
        await pipeline.start()
        async with KafkaTimestamps(bootstrap_servers, topic) as kafka:
            with PacedWriter(dsn, QUIET_TABLE, 1) as quiet_writer, PacedWriter(dsn, NOISY_TABLE, 1) as noisy_writer:
                phases = Phases(pipeline, Quiet(quiet_writer, receiver, quiet_rate, seconds), noisy_writer, kafka,
                                server_pids or {})
                alone = await phases.alone()
                noisy = await create_noisy(store_dsn, hanging_receiver, hanging, heavy_conditions)
                beside = await phases.beside_noisy(noisy_rate, hanging_receiver, noisy, warmup)
        return {"complete": not alone["missing"] and not beside["missing"], "alone": alone, "beside_noisy": beside,
                "noisy": noisy, "added_ms": added(alone, beside), "target_ms": TARGET_MS,
                "verified": receiver.verified, "rejected": receiver.rejected, "duplicates": receiver.duplicates,
                "conditions": conditions(quiet_rate, noisy_rate, seconds, pipeline.config_text)}


def added(alone: dict[str, Any], beside: dict[str, Any]) -> dict[str, float | None]:
    """The delay the noisy organization added to each percentile (beside minus alone), in ms."""
    return {key: None if alone[key] is None or beside[key] is None else round(beside[key] - alone[key], 1)
            for key in ("p50_ms", "p99_ms", "max_ms")}


def conditions(quiet_rate: float, noisy_rate: float, seconds: float, config: str) -> dict[str, Any]:
    """What the numbers depend on: the machine, its load, the writers and walhook's configuration."""
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "seconds_per_phase": seconds, "quiet_rate": quiet_rate, "noisy_rate": noisy_rate,
            "writers": "one process each, one libpq connection in pipeline mode, one committed transaction per "
                       "row; every fifth an UPDATE of an earlier row", "config": config}


def print_table(result: dict[str, Any]) -> None:
    """The quiet organization's latency in each phase, the delay added, and the noisy load that was there."""
    print(f"{'quiet organization':<26}{'written':>9}{'delivered':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'publisher cores':>16}{'machine cores':>14}")
    for name, key in (("alone", "alone"), ("beside the noisy one", "beside_noisy")):
        run = result[key]
        cells = [_cell(run[k]) for k in ("p50_ms", "p99_ms", "max_ms")]
        print(f"{name:<26}{run['written']:>9}{run['delivered']:>10}{cells[0]:>9}{cells[1]:>9}{cells[2]:>9}"
              f"{run['busy_cores']['publisher']:>16}{run['busy_cores']['machine']:>14}")
    for name, key in (("alone", "alone"), ("beside the noisy one", "beside_noisy")):
        split = result[key]["stages"]
        print(f"  {name}: " + ", ".join(f"{stage} p50/p99/max {v['p50_ms']}/{v['p99_ms']}/{v['max_ms']} ms"
                                          for stage, v in split.items() if isinstance(v, dict)))
    delay = result["added_ms"]
    verdict = "met" if all(v is not None and v <= result["target_ms"] for v in delay.values()) else "NOT met"
    print(f"{'delay added':<26}{'':>19}{_cell(delay['p50_ms']):>9}{_cell(delay['p99_ms']):>9}"
          f"{_cell(delay['max_ms']):>9}   target <= {result['target_ms']:g} ms: {verdict}")
    noisy, load = result["noisy"], result["beside_noisy"]["noisy_load"]
    print(f"noisy organization: {noisy['hanging_integrations']} hanging integrations holding "
          f"{load['hanging']['open_at_start']}-{load['hanging']['open_at_end']} connections "
          f"(peak {load['hanging']['peak_open']}, {load['hanging']['integrations_reached']} integrations reached); "
          f"{noisy['heavy_integrations']} conditions of {noisy['tests_per_heavy_condition']} tests "
          f"(cost {noisy['condition_cost']} of {noisy['budget']}, one more refused: {noisy['one_more_refused']}); "
          f"{load['written']} changes at {load['achieved_rate']}/s; {load['parked_in_store']} deliveries "
          f"waiting in the store")
    print(f"verified {result['verified']}, rejected {result['rejected']}, duplicates {result['duplicates']}")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--quiet-rate", type=float, default=200, help="the quiet organization's changes/s")
    parser.add_argument("--noisy-rate", type=float, default=1000, help="the noisy organization's changes/s")
    parser.add_argument("--hanging", type=int, default=40, help="the noisy organization's hanging integrations")
    parser.add_argument("--no-conditions", dest="heavy_conditions", action="store_false",
                        help="the noisy organization without its heavy conditions (only the hanging integrations)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-fairness-"))
    with LocalStack(workdir / "stack") as stack:
        dsn, store_dsn, servers = stack_for_pipeline(stack)
        started = time.monotonic()
        result = asyncio.run(run_fairness(dsn, store_dsn, stack.bootstrap_servers or "", workdir, args.seconds,
                                          args.quiet_rate, args.noisy_rate, args.hanging, server_pids=servers,
                                          heavy_conditions=args.heavy_conditions))
    result["conditions"]["wall_seconds"] = round(time.monotonic() - started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    if not result["complete"]:  # written down first, so the run's figures stay for whoever looks into it
        raise SystemExit(f"FAILED: {result['alone']['missing']} (alone) and {result['beside_noisy']['missing']} "
                         "(beside the noisy one) of the quiet organization's changes did not arrive")


if __name__ == "__main__":
    main()
