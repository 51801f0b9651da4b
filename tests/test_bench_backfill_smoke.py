"""Smoke version of the backfill benchmark (bench/backfill.py): tiny sizes, correctness only."""

from __future__ import annotations

from pathlib import Path

from bench.backfill import run_backfill_bench
from tests.conftest import Servers


async def test_backfill_benchmark_reads_every_row_and_times_the_stream(servers: Servers, database: str, topic: str,
                                                                       workdir: Path) -> None:
    result = await run_backfill_bench(database, servers.bootstrap_servers, workdir, rows=3000, rate=50, seconds=2,
                                      topic=topic)
    assert result["backfill_state"] == "done" and result["rows_read"] == 3000 and result["rows_published"] == 3000
    assert result["reads_in_kafka"] == 3000 and result["rows_per_s"] > 0 and result["longest_hold_ms"] > 0
    for phase in ("without_backfill", "with_backfill"):
        assert result[phase]["events"] == result[phase]["written"] > 0  # every streamed change arrived
        assert result[phase]["max_ms"] >= result[phase]["p99_ms"] >= result[phase]["p50_ms"] > 0
