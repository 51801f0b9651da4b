"""A large transaction is produced while it is decoded: the CDC's memory stays bounded."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from bench.memory import count_events
from bench.procfs import status_mb
from tests.conftest import Servers
from tests.support import start_walhook, write_config
from walhook.demo import wait_for_streaming
from walhook.stack import stop_process

ROWS = 200_000
RSS_BOUND_MB = 300  # the bound docs/concepts/guarantees.md states

ENTITY = '''
[[entities]]
table = "public.bulk"
entity_key = "bulk"
entity_path = "bulk/{id}"
collection_path = "bulk"
organization_column = "org"
'''


async def test_a_large_transaction_is_captured_with_bounded_memory(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE bulk (id int PRIMARY KEY, org text, name text, amount numeric, at timestamptz)")
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, ENTITY)
    cdc = start_walhook("cdc", config, workdir / "cdc.log")
    try:
        await wait_for_streaming(database, "walhook", cdc)
        with psycopg.connect(database) as conn:  # one transaction
            conn.execute("INSERT INTO bulk SELECT g, 'acme', 'row ' || g, g * 1.5, now() "
                         "FROM generate_series(1, %s) g", [ROWS])
        started = time.monotonic()
        produced = await count_events(servers.bootstrap_servers, topic, ROWS, timeout=180)
        elapsed = time.monotonic() - started
        rss = status_mb(cdc.pid)
    finally:
        stop_process(cdc)
    print(f"\n{ROWS} rows in one transaction: {elapsed:.1f}s, peak RSS {rss:.0f} MB")
    assert produced == ROWS
    assert rss < RSS_BOUND_MB


def test_the_documentation_states_the_bound_this_test_holds() -> None:
    guarantees = Path(__file__).resolve().parents[1] / "docs" / "concepts" / "guarantees.md"
    assert f"**{RSS_BOUND_MB} MB** for the capture process" in guarantees.read_text()
