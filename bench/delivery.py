"""Delivery throughput: walhook publisher against wrk, posting to the same receiver in the same run.

The receiver answers 200 at once: nginx (Debian's package, ``location / { return 200; }``, one
worker) or, with ``--receiver python``, a small aiohttp server in its own process.

* **Reference**: ``wrk`` POSTs the same ~1 KB body (with webhook-style headers) over as many
  kept-alive connections as walhook uses (integrations x ``concurrency_per_integration``) for
  ``--seconds``.
* **walhook**: one organization with ``--integrations`` integrations, each at its own URL path of
  the receiver and subscribed to its own entity key (``bench/records{n}:*``). ``--events`` synthetic
  events of ~1 KB (shaped like real ones: ``models.samples``) are spread round-robin over those keys,
  ``--entities`` entities per key, so every event makes exactly one delivery: 100,000 events are
  100,000 deliveries. ``walhook publisher`` runs as a real process (signing, logging every attempt,
  committing offsets); the run starts it, waits until its consumer group is Stable (the join is not
  timed), then produces the events straight to Kafka (no CDC). Time: from the first attempt's start
  (attempt log) to the last delivery recorded ``succeeded`` (delivery rows), while the store counts
  every delivery ``succeeded``.
* Runs: 1 publisher; 2 publisher processes in one group (``--partitions`` partitions); 1 publisher
  with one more integration whose endpoint accepts connections and never answers, subscribed to the
  first integration's entity key (its deliveries hang until the request timeout and are retried;
  only the healthy integrations' deliveries are timed).

Prints deliveries/s, the ratios (walhook / wrk, 2 publishers / 1, with the hanging endpoint /
without) and each publisher's peak RSS (VmHWM); writes bench/results/delivery.json.

    python bench/delivery.py [--events 100000] [--integrations 10] [--seconds 10] [--receiver nginx|python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

# Run as a script, only bench/ itself is on the path: the repository root is needed too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.receivers import PythonReceiver
from bench.tools import Nginx, ensure_tools, run_wrk
from bench.workload import Run, Workload, run_walhook, sample_body
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--integrations", type=int, default=10)
    parser.add_argument("--entities", type=int, default=1000, help="entities per entity key")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long wrk runs")
    parser.add_argument("--receiver", choices=["nginx", "python"], default="nginx")
    parser.add_argument("--runs", default="one,two,hanging", help="which walhook runs: one, two, hanging")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "delivery.json")
    return parser.parse_args()


def receiver(kind: str, directory: Path) -> AbstractContextManager[Nginx | PythonReceiver]:
    return Nginx(directory / "nginx") if kind == "nginx" else PythonReceiver(directory / "python-receiver")


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The reference and the walhook runs, on one stack and one receiver."""
    workload = Workload(args.events, args.integrations, args.entities, args.partitions)
    results: dict[str, Any] = {"workload": workload.describe(), "receiver": args.receiver}
    with LocalStack(workdir / "stack") as stack, receiver(args.receiver, workdir) as target:
        results["wrk_per_s"] = round(await asyncio.to_thread(
            run_wrk, f"{target.url}/wrk", sample_body(workload), workload.connections, args.seconds, workdir))
        print(f"wrk: {results['wrk_per_s']:.0f} requests/s over {workload.connections} connections", flush=True)
        runs: dict[str, Run] = {}
        for name in args.runs.split(","):
            runs[name] = await run_walhook(stack.dsn or "", stack.bootstrap_servers or "", workdir, name,
                                           target.url, workload, publishers=2 if name == "two" else 1,
                                           hanging=name == "hanging")
            print(f"walhook {name}: {runs[name].per_second:.0f} deliveries/s", flush=True)
        results["runs"] = {name: run.describe() for name, run in runs.items()}
    results["ratios"] = ratios(results["wrk_per_s"], runs)
    return results


def ratios(wrk: float, runs: dict[str, Run]) -> dict[str, float]:
    """walhook / wrk (target >= 0.25), 2 publishers / 1 (>= 1.8), with a hanging endpoint / without (>= 0.9)."""
    found: dict[str, float] = {}
    if "one" in runs:
        found["walhook_vs_wrk"] = round(runs["one"].per_second / wrk, 3)
        for name, key in (("two", "two_vs_one"), ("hanging", "hanging_vs_one")):
            if name in runs:
                found[key] = round(runs[name].per_second / runs["one"].per_second, 3)
    return found


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'':<28}{'seconds':>9}{'per second':>12}{'peak RSS MB':>14}")
    print(f"{'wrk (reference)':<28}{'':>9}{results['wrk_per_s']:>12.0f}")
    labels = {"one": "walhook, 1 publisher", "two": "walhook, 2 publishers", "hanging": "walhook, 1 + hanging endpoint"}
    for name, run in results["runs"].items():
        rss = "+".join(f"{mb:.0f}" for mb in run["peak_rss_mb"])
        print(f"{labels.get(name, name):<28}{run['seconds']:>9.2f}{run['deliveries_per_s']:>12.0f}{rss:>14}")
    targets = {"walhook_vs_wrk": 0.25, "two_vs_one": 1.8, "hanging_vs_one": 0.9}
    for key, value in results["ratios"].items():
        verdict = "met" if value >= targets[key] else "not met"
        print(f"ratio {key}: {value:.3f} (target >= {targets[key]}: {verdict})")
    print(f"({results['workload']['events']} events, {results['workload']['integrations']} integrations, "
          f"receiver {results['receiver']})")


def main() -> None:
    args = parse_args()
    ensure_tools(["wrk", "nginx"] if args.receiver == "nginx" else ["wrk"])
    workdir = Path(tempfile.mkdtemp(prefix="walhook-bench-delivery-"))
    results = asyncio.run(measure(args, workdir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"total {time.monotonic() - started:.0f}s")
