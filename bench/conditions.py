"""Delivery throughput with conditions: 100 integrations with conditions in one organization, against
the same run without conditions.

Both runs deliver the same events to the same integrations (bench/workload.py: ~1 KB events spread
round-robin over ``--integrations`` entity keys, one delivery per event):

* **without**: integration ``n`` subscribes to its own entity key, ``bench/records{n}:*``;
* **with**: every integration subscribes to every key (``bench/*:*``) with a condition that holds
  for its own events only:
  ``{"all_of": [{"property": "workspaceId", "equals": "ws{n}"}, {"any_of": [{"changed": ["status"]},
  {"property": "status", "in": ["open", "in_review"]}]}]}``.
  So each event is a candidate for all 100 integrations, delivered to one and filtered out (and
  counted) for the 99 others; the candidates' index by ``workspaceId`` (publisher/routing/candidates.py)
  evaluates only the one whose workspace the event names.

The runs alternate (without, with, without, with, ...) ``--repeats`` times, so drift on a shared
machine hits both alike; each run is timed as in bench/delivery.py (first attempt to last
``succeeded``). Prints each run, the medians and their ratio (target: with / without >= 0.9);
writes bench/results/conditions.json.

Because a shared machine's noise can hide (or invent) a few percent end to end, the script also
times the routing step alone, in process and in CPU time: ``parse_event`` + routing of every event
as the publisher does it (the candidates for its entity key and operation, indexed by the value
their conditions require), without and with conditions, and with every candidate's conditions
evaluated (``route`` over all 100), best of 3. That difference is what conditions add per event,
whatever else the publisher does.

    python bench/conditions.py [--events 20000] [--integrations 100] [--repeats 2] [--receiver nginx|python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.delivery import receiver
from bench.tools import ensure_tools
from bench.workload import ORGANIZATION, Run, Workload, event, own_key, run_walhook
from publisher.routing.candidates import Candidates, candidates_for, route_candidates
from publisher.routing.matching import SubscriptionItem, parse_items
from publisher.routing.recipients import EventFields, Routed, parse_event, route
from publisher.store import Integration
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9


def with_condition(n: int) -> list[SubscriptionItem]:
    """Every key, only integration ``n``'s own events (its workspace; the status part always holds too)."""
    return [{"subscription": "bench/*:*", "when": {"all_of": [
        {"property": "workspaceId", "equals": f"ws{n}"},
        {"any_of": [{"changed": ["status"]}, {"property": "status", "in": ["open", "in_review"]}]}]}}]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--integrations", type=int, default=100)
    parser.add_argument("--entities", type=int, default=100, help="entities per entity key")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (without, with)")
    parser.add_argument("--receiver", choices=["nginx", "python"], default="nginx")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "conditions.json")
    return parser.parse_args()


async def compare(dsn: str, bootstrap_servers: str, workdir: Path, url: str, workload: Workload,
                  repeats: int, timeout: float = 900) -> dict[str, list[Run]]:
    """Alternating runs without and with conditions on one stack and receiver."""
    runs: dict[str, list[Run]] = {"without": [], "with": []}
    for repeat in range(repeats):
        for name, subscriptions in (("without", own_key), ("with", with_condition)):
            run = await run_walhook(dsn, bootstrap_servers, workdir, f"conditions_{name}_{repeat}", url,
                                    workload, timeout=timeout, subscriptions=subscriptions)
            runs[name].append(run)
            print(f"{name} conditions, run {repeat + 1}: {run.per_second:.0f} deliveries/s "
                  f"({run.filtered} filtered)", flush=True)
    return runs


def routing_us(workload: Workload, events: int = 5000) -> dict[str, float]:
    """CPU microseconds per event of parse_event + routing over the workload's integrations: as live delivery
    routes (the directory's candidates for the event's key and operation, indexed by required value), without
    and with conditions, and with conditions evaluated on every candidate (``route``, the reference)."""
    import orjson

    bodies = [orjson.dumps(event(n, workload)) for n in range(min(events, workload.events))]
    found = {}
    for name, subscriptions, live in (("without", own_key, True), ("with", with_condition, True),
                                      ("with_unindexed", with_condition, False)):
        enabled = [Integration(n, ORGANIZATION, f"i{n}", f"http://127.0.0.1:9/i{n}", parse_items(subscriptions(n)),
                               []) for n in range(workload.integrations)]
        best = float("inf")
        kept: dict[tuple[str, str], Candidates] | None = {} if live else None
        for _ in range(3):
            started = time.process_time()
            delivered = sum(len(_routed(enabled, parse_event(body), kept).recipients) for body in bodies)
            best = min(best, time.process_time() - started)
        assert delivered == len(bodies)  # one recipient per event in all
        found[name] = round(best / len(bodies) * 1e6, 1)
    return found


def _routed(enabled: list[Integration], fields: EventFields, kept: dict[tuple[str, str], Candidates] | None
            ) -> Routed:
    """As the publisher routes a live event (``kept``: the directory's candidates per key), or ``route`` over all."""
    if kept is None:
        return route(enabled, fields)
    key = (fields.entity_key, fields.operation)
    if key not in kept:
        kept[key] = candidates_for(enabled, *key)
    return route_candidates(kept[key], fields)


def summary(runs: dict[str, list[Run]], workload: Workload, receiver_kind: str) -> dict[str, Any]:
    medians = {name: statistics.median(run.per_second for run in found) for name, found in runs.items()}
    return {"workload": workload.describe(), "receiver": receiver_kind, "routing_us_per_event": routing_us(workload),
            "runs": {name: [run.describe() for run in found] for name, found in runs.items()},
            "median_per_s": {name: round(value) for name, value in medians.items()},
            "with_vs_without": round(medians["with"] / medians["without"], 3)}


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workload = Workload(args.events, args.integrations, args.entities, args.partitions)
    with LocalStack(workdir / "stack") as stack, receiver(args.receiver, workdir) as target:
        runs = await compare(stack.dsn or "", stack.bootstrap_servers or "", workdir, target.url, workload,
                             args.repeats)
    return summary(runs, workload, args.receiver)


def main() -> None:
    args = parse_args()
    ensure_tools(["nginx"] if args.receiver == "nginx" else [])
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-conditions-"))
    results = asyncio.run(measure(args, workdir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    ratio, routing = results["with_vs_without"], results["routing_us_per_event"]
    print(f"routing alone (parse once + {args.integrations} integrations), CPU per event: without conditions "
          f"{routing['without']} us, with conditions {routing['with']} us (every condition evaluated: "
          f"{routing['with_unindexed']} us)")
    print(f"\nmedian deliveries/s: without conditions {results['median_per_s']['without']}, "
          f"with conditions {results['median_per_s']['with']}")
    print(f"ratio with / without: {ratio:.3f} (target >= {TARGET}: {'met' if ratio >= TARGET else 'not met'})")
    print(f"({args.events} events, {args.integrations} integrations, receiver {args.receiver}); results: {args.out}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"total {time.monotonic() - started:.0f}s")
