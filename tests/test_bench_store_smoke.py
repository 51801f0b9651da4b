"""Smoke version of bench/store_rate.py: tiny sizes, every delivery recorded and succeeded."""

from __future__ import annotations

import psycopg

from bench.store_rate import run


async def test_store_rate_benchmark_records_every_delivery_and_attempt(database: str) -> None:
    assert await run(database, writers=2, deliveries=200, batch=50, offset=0) > 0
    with psycopg.connect(database) as conn:  # counted, not the metrics' estimate
        counts = dict(conn.execute("SELECT status, count(*) FROM walhook.deliveries GROUP BY status").fetchall())
    assert counts == {"succeeded": 200}
