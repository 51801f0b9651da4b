"""Smoke version of the delivery log benchmark (bench/log_size.py): tiny sizes, what it reports holds."""

from __future__ import annotations

import re

import psycopg
import pytest

from bench.log_size import measure


async def test_log_size_benchmark_measures_and_prunes_everything(database: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    await measure(database, 2000, 1024)
    out = capsys.readouterr().out
    assert re.search(r"^succeeded, empty response body: \d+\.\d\d GB per million", out, re.MULTILINE), out
    assert re.search(r"^failed, 1024 B response body: \d+\.\d\d GB per million", out, re.MULTILINE), out
    assert re.search(r"^pruning: \d+ attempt partitions dropped .*; 6000 deliveries deleted", out, re.MULTILINE)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM walhook.deliveries").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM walhook.attempts").fetchone() == (0,)
