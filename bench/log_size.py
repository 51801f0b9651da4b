"""Bytes the delivery log stores per million deliveries, and how fast pruning removes them.

Records ``--deliveries`` deliveries of a 1 KB event through the store's own hot-path statements,
each with one attempt logged the way the publisher logs it (the signed request's headers, a
receiver's response headers, a short response body), then reads the log's size on disk and
scales it to a million. A second pass with ``--failed-body`` bytes of response body per attempt
shows the worst case the 16 KB cap allows. Finally it prunes everything (retention in the past)
and times it: one day partition dropped, the deliveries deleted in batches.

    python bench/log_size.py [--deliveries 20000] [--failed-body 16384]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg

from publisher.store import AttemptRecord, NewDelivery, Store
from walhook.stack import LocalStack

EVENT = orjson.dumps({"eventTimestamp": "2026-11-22T23:04:42.998713Z", "operationType": "updated",
                      "entityPath": "pipelinesPackets/7/comments/1", "entityId": "1", "entityKey": "flows/comments",
                      "collectionPath": "pipelinesPackets/7/comments", "organizationId": "acme",
                      "data": {"value": {"key": "pipelinesPackets/7/comments/1",
                                         "properties": {"id": 1, "content": "x" * 300, "createdBy": "user-3"}},
                               "oldValue": {"key": "pipelinesPackets/7/comments/1",
                                            "properties": {"id": 1, "content": "y" * 300, "createdBy": "user-3"}},
                               "updateMask": ["content"]},
                      "eventId": "evt_00000000016F7C68_000000",
                      "transaction": {"id": 756, "commitLsn": "0/16F7C68", "index": 0}})
REQUEST_HEADERS = {"content-type": "application/json", "user-agent": "walhook/0.1.0",
                   "webhook-id": "evt_00000000016F7C68_000000_i1", "webhook-timestamp": "1795393535",
                   "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}
RESPONSE_HEADERS = {"Content-Length": "0", "Date": "Tue, 01 Dec 2026 10:00:00 GMT", "Server": "nginx/1.26",
                    "Connection": "keep-alive"}
BATCH = 1000


def _deliveries(integration: int, start: int, count: int) -> list[NewDelivery]:
    return [NewDelivery(integration, "acme", f"evt_{n:016X}_000000", f"evt_{n:016X}_000000_i{integration}",
                        "flows/comments", f"pipelinesPackets/{n % 997}/comments/{n}", "updated", EVENT, n % 6, n)
            for n in range(start, start + count)]


def _attempts(ids: list[int], integration: int, started: datetime, body: bytes, status: str) -> list[AttemptRecord]:
    return [AttemptRecord(i, integration, 1, "scheduled", started, "https://hooks.example.com/walhook",
                          REQUEST_HEADERS, 200 if status == "succeeded" else 500, RESPONSE_HEADERS, body, 12.5,
                          None if status == "succeeded" else "HTTP 500", status, None) for i in ids]


async def fill(store: Store, integration: int, count: int, body: bytes, status: str, offset: int) -> None:
    started = datetime.now(UTC)
    for start in range(offset, offset + count, BATCH):
        created = await store.create_deliveries(_deliveries(integration, start, BATCH), timedelta(0))
        await store.record_attempts(_attempts([d.id for d in created], integration, started, body, status))


async def measure(dsn: str, count: int, failed_body: int) -> None:
    """A first pass fills the tables (inserts, then the attempt's update: dead versions that vacuum frees);
    the passes measured after it show what the log grows by in steady state."""
    text = base64.b64encode(os.urandom(failed_body * 3 // 4))  # response text that does not compress away
    async with Store(dsn) as store:
        await store.ensure_partitions()
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "https://hooks.example.com/walhook", ["*"])
        await fill(store, integration, count, b"", "succeeded", 0)
        _vacuum(dsn)
        for label, body, status, offset in (("succeeded, empty response body", b"", "succeeded", count),
                                            (f"failed, {len(text)} B response body", text, "failed", 2 * count)):
            before = await store.log_size()
            await fill(store, integration, count, body, status, offset)
            _vacuum(dsn)
            after = await store.log_size()
            print(f"{label}: {_per_million(after.total_bytes - before.total_bytes, count)} (deliveries "
                  f"{_per_million(after.deliveries_bytes - before.deliveries_bytes, count)}, attempts "
                  f"{_per_million(after.attempts_bytes - before.attempts_bytes, count)})")
        await _prune(store, 3 * count)


async def _prune(store: Store, count: int) -> None:
    began = time.perf_counter()
    later = datetime.now(UTC) + timedelta(days=2)
    dropped = 0
    for name in await store.attempt_partitions():  # the partitions alone first: what dropping costs
        await store._script([f"DROP TABLE {{s}}.{name}"], "drop")
        dropped += 1
    dropping = time.perf_counter() - began
    began = time.perf_counter()
    pruned = await store.prune(timedelta(0), timedelta(0), now=later)
    deleting = time.perf_counter() - began
    print(f"pruning: {dropped} attempt partitions dropped in {dropping:.2f} s; {pruned.deliveries_deleted} "
          f"deliveries deleted in {deleting:.1f} s ({pruned.deliveries_deleted / deleting:,.0f}/s)")


def _vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE walhook.deliveries")
        conn.execute("VACUUM ANALYZE walhook.attempts")


def _per_million(size: int, count: int) -> str:
    return f"{size / count * 1_000_000 / 1e9:.2f} GB per million"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--failed-body", type=int, default=16_384)
    args = parser.parse_args()
    with LocalStack(Path(tempfile.mkdtemp(prefix="walhook-bench-log-"))) as stack:
        asyncio.run(measure(stack.dsn or "", args.deliveries, args.failed_body))


if __name__ == "__main__":
    main()
