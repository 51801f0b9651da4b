"""Smoke version of the tracing benchmark (bench/tracing.py): tiny sizes, correctness only."""

from __future__ import annotations

from bench.tracing import MODES, run_tracing_bench
from tests.conftest import Servers


def test_tracing_benchmark_drains_every_mode_and_every_change_reaches_kafka(
        servers: Servers, database: str, topic: str) -> None:
    result = run_tracing_bench(database, servers.bootstrap_servers, inserts=300, updates=100, small=50, topic=topic)
    assert result["changes"] == 450
    for mode in MODES:
        assert result[f"{mode}_events_in_kafka"] == 450, mode  # counted by event id: nothing lost, traced or not
        assert result[f"{mode}_changes_per_s"] > 0
