"""Smoke version of the capture benchmark (bench/capture.py): tiny sizes, correctness only."""

from __future__ import annotations

from pathlib import Path

from bench.capture import run_capture_bench
from tests.conftest import Servers


def test_capture_benchmark_drains_every_slot_and_every_change_reaches_kafka(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    result = run_capture_bench(database, servers.bootstrap_servers, workdir, inserts=600, updates=300, small=100,
                               topic=topic, row_paths=("auto", "python"))
    assert result["changes"] == 1000
    assert result["events_in_kafka"] == 1000  # counted by event id: nothing lost on the way
    assert result["python_events_in_kafka"] == 1000 and result["python_s"] > 0
    assert result["pg_recvlogical_s"] > 0 and result["walhook_s"] > 0 and result["walhook_peak_rss_mb"] > 0
