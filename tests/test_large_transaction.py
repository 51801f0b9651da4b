"""A large transaction is produced while it is decoded: the CDC's memory stays bounded."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer

from tests.conftest import Servers
from tests.support import start_walhook, write_config
from walhook.demo import wait_for_streaming
from walhook.stack import stop_process

ROWS = 200_000
RSS_BOUND_MB = 300  # the bound the README states

ENTITY = '''
[[entities]]
table = "public.bulk"
entity_key = "bulk"
entity_path = "bulk/{id}"
collection_path = "bulk"
organization_column = "org"
'''


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


async def count_events(bootstrap_servers: str, topic: str, expected: int, timeout: float) -> int:
    """Consume the topic and count distinct event ids (the local broker's end offsets count batches)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                seen.update(dict(record.headers)["walhook-event-id"] for record in records)
    finally:
        await consumer.stop()
    return len(seen)


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
        rss = peak_rss_mb(cdc.pid)
    finally:
        stop_process(cdc)
    print(f"\n{ROWS} rows in one transaction: {elapsed:.1f}s, peak RSS {rss:.0f} MB")
    assert produced == ROWS
    assert rss < RSS_BOUND_MB
