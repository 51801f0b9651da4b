"""Smoke version of bench/store_rate.py: tiny sizes, every delivery recorded and succeeded."""

from __future__ import annotations

from bench.store_rate import run
from publisher.store import Store


async def test_store_rate_benchmark_records_every_delivery_and_attempt(database: str) -> None:
    assert await run(database, writers=2, deliveries=200, batch=50, offset=0) > 0
    async with Store(database) as store:
        counts = await store.delivery_counts()
    assert counts.get("succeeded") == 200 and counts.get("pending", 0) == 0
