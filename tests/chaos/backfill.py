"""The ledger, extended to backfills: existing rows read while a writer changes a tenth of them.

A table of existing rows is backfilled to a fresh integration (subscribed to the table's changes) while
a writer updates, deletes and inserts rows of it; optionally the capture process is killed with
SIGKILL mid-backfill. The receiver verifies every request. At the end, for every entity, the last
event the receiver got (in the order it got them) must be the database's state: the row's version,
or the delete for a deleted row (``lost`` counts the entities for which it is not). ``read_after_newer``
counts reads that arrived after a newer change of their entity, and updates that arrived after a read
already newer than them (a read that overtook an earlier change).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from publisher.store import Store
from tests.chaos.processes import Supervised
from tests.chaos.receivers import Hit, LedgerReceiver
from tests.chaos.scenario import PUBLISHER
from tests.chaos.servers import ChaosServers
from tests.support import write_config
from walhook.demo import wait_for_publisher, wait_for_streaming

ENTITY = '''
[[entities]]
table = "public.catalog"
entity_key = "shop/catalog"
entity_path = "catalog/{id}"
collection_path = "catalog"
organization_column = "org"

[backfill]
chunk_rows = 100
max_chunk_rows = CHUNK
poll_interval = 0.2
'''


@dataclass
class BackfillSummary:
    """What the receiver got against the database's final state."""

    rows: int
    changes: int
    entities: int = 0
    lost: int = 0
    read_after_newer: int = 0
    deleted_not_last: int = 0
    reads: int = 0
    duplicates: int = 0
    unverified: int = 0
    kills: int = 0
    killed_at: int | None = None  # rows read when the capture was killed
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.read_after_newer or self.deleted_not_last or self.unverified)

    def line(self) -> str:
        return (f"[backfill {self.rows:,} rows] changes committed={self.changes} entities={self.entities} "
                f"reads delivered={self.reads} duplicates={self.duplicates} lost={self.lost} "
                f"read after newer={self.read_after_newer} delete not last={self.deleted_not_last} "
                f"unverified={self.unverified} cdc kills={self.kills} (at {self.killed_at} rows read)")


async def run_backfill_scenario(rows: int, kill_cdc: bool, seed: int = 20_261_201) -> BackfillSummary:
    directory = Path(tempfile.mkdtemp(prefix="walhook-chaos-backfill-"))
    servers = ChaosServers(directory)
    await asyncio.to_thread(servers.start)
    try:
        async with LedgerReceiver() as receiver:
            return await _run(servers, receiver, directory, rows, kill_cdc, random.Random(seed))
    finally:
        await asyncio.to_thread(servers.remove)


async def _run(servers: ChaosServers, receiver: LedgerReceiver, directory: Path, rows: int, kill_cdc: bool,
               rng: random.Random) -> BackfillSummary:
    app = servers.dsn("app")
    async with await psycopg.AsyncConnection.connect(app, autocommit=True) as conn:
        await conn.execute("CREATE TABLE catalog (id int PRIMARY KEY, org text NOT NULL, version int NOT NULL, "
                           "payload text NOT NULL)")
        await conn.execute("INSERT INTO catalog SELECT i, 'acme', 1, md5(i::text) FROM generate_series(1, %s) i",
                           [rows])
    topic = f"walhook.chaos.{uuid.uuid4().hex[:10]}"
    config = write_config(directory / "walhook.toml", app, servers.bootstrap_servers, topic,
                          ENTITY.replace("CHUNK", str(min(1000, max(200, rows // 50)))), PUBLISHER).resolve()
    text = config.read_text()
    config.write_text(text.replace(f'[store]\ndsn = "{app}"', f'[store]\ndsn = "{servers.dsn("store")}"'))
    async with Store(servers.dsn("store")) as store:
        receiver.secrets["fresh"] = await store.add_organization("acme")
        integration = await store.add_integration("acme", receiver.url("fresh"), ["shop/catalog:*"], "fresh")
        cdc, publisher = Supervised("cdc", config, directory), Supervised("publisher", config, directory)
        cdc.start()
        assert cdc.process is not None
        await wait_for_streaming(app, "walhook", cdc.process, timeout=60)
        publisher.start()
        assert publisher.process is not None
        await wait_for_publisher(servers.bootstrap_servers, f"{topic}.publisher", publisher.process, 60)
        try:
            summary = await _backfill_under_load(store, cdc, receiver, app, rows, integration, kill_cdc, rng)
        finally:
            await asyncio.gather(cdc.stop(), publisher.stop())
    summary.kills = cdc.kills
    return summary


async def _backfill_under_load(store: Store, cdc: Supervised, receiver: LedgerReceiver, app: str, rows: int,
                               integration: int, kill_cdc: bool, rng: random.Random) -> BackfillSummary:
    job = await store.create_backfill("public.catalog", integration_id=integration)
    changes, killed_at = await asyncio.gather(_write(app, rows, rng, job.id, store),
                                              _kill_mid_backfill(store, cdc, job.id, rows // 3) if kill_cdc
                                              else _none())
    deadline = time.monotonic() + 60 + rows / 500
    while (await store.backfill(None, job.id)).state == "running" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    final = await _database(app)
    summary = BackfillSummary(rows, changes, killed_at=killed_at)
    while time.monotonic() < deadline:
        summary = _compare(receiver.hits, final, rows, changes, killed_at)
        if not summary.lost:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.0)
    return _compare(receiver.hits, final, rows, changes, killed_at)


async def _none() -> None:
    return None


async def _write(app: str, rows: int, rng: random.Random, backfill_id: int, store: Store) -> int:
    """Update, delete or insert a random tenth of the rows, paced over the backfill; returns the count."""
    chosen = rng.sample(range(1, rows + 1), rows // 10)
    changes = 0
    async with await psycopg.AsyncConnection.connect(app, autocommit=True) as conn:
        for n, item in enumerate(chosen):
            kind = rng.random()
            if kind < 0.3:
                await conn.execute("DELETE FROM catalog WHERE id = %s", [item])
            elif kind < 0.35:
                await conn.execute("INSERT INTO catalog VALUES (%s, 'acme', 1, 'new')", [rows + n + 1])
            else:
                await conn.execute("UPDATE catalog SET version = version + 1 WHERE id = %s", [item])
            changes += 1
            if n % 50 == 49 and (await store.backfill(None, backfill_id)).state == "running":
                await asyncio.sleep(0.05)  # spread the changes over the backfill, not all before it
    return changes


async def _kill_mid_backfill(store: Store, cdc: Supervised, backfill_id: int, after: int) -> int | None:
    """SIGKILL the capture once the backfill has read ``after`` rows; returns rows read by then."""
    for _ in range(60_000):
        job = await store.backfill(None, backfill_id)
        if job.state != "running":
            return None
        if job.rows_read >= after:
            await cdc.kill()
            return job.rows_read
        await asyncio.sleep(0.01)
    return None


async def _database(app: str) -> dict[int, int]:
    async with await psycopg.AsyncConnection.connect(app) as conn:
        return dict(await (await conn.execute("SELECT id, version FROM catalog")).fetchall())


def _compare(hits: list[Hit], final: dict[int, int], rows: int, changes: int, killed_at: int | None
             ) -> BackfillSummary:
    summary = BackfillSummary(rows, changes, killed_at=killed_at)
    timeline: dict[int, list[tuple[str, int]]] = defaultdict(list)
    seen: set[str] = set()
    for hit in sorted(hits, key=lambda h: h.at):
        if hit.event is None:
            summary.unverified += 1
            continue
        if not hit.delivered or hit.webhook_id in seen:
            summary.duplicates += hit.delivered
            continue
        seen.add(hit.webhook_id)
        item, operation, version = _fields(hit.event)
        timeline[item].append((operation, version))
        summary.reads += operation == "read"
    summary.entities = len(timeline)
    for item in set(final) | set(range(1, rows + 1)):
        _check_entity(summary, item, timeline.get(item, []), final.get(item))
    return summary


def _fields(event: dict[str, Any]) -> tuple[int, str, int]:
    side = event["data"]["oldValue"] if event["operationType"] == "deleted" else event["data"]["value"]
    return int(event["entityId"]), event["operationType"], int(side["properties"]["version"])


def _check_entity(summary: BackfillSummary, item: int, events: list[tuple[str, int]], version: int | None) -> None:
    expected = ("deleted", None) if version is None else ("state", version)
    last = events[-1] if events else None
    if last is None or (last[0] == "deleted") != (expected[0] == "deleted") or (
            version is not None and last[1] != version):
        summary.lost += 1
        _example(summary, f"entity {item}: last received {last}, database {expected}; all: {events[-6:]}")
    newest_read = None
    for position, (operation, seen_version) in enumerate(events):
        earlier = [v for op, v in events[:position]]
        if operation == "read" and earlier and max(earlier) > seen_version:
            summary.read_after_newer += 1
            _example(summary, f"entity {item}: read v{seen_version} after {events[:position][-3:]}")
        if operation == "updated" and newest_read is not None and seen_version <= newest_read:
            summary.read_after_newer += 1
            _example(summary, f"entity {item}: update to v{seen_version} after a read of v{newest_read}")
        if operation == "read":
            newest_read = max(newest_read or 0, seen_version)
        if operation == "deleted" and position != len(events) - 1:
            summary.deleted_not_last += 1
            _example(summary, f"entity {item}: delete is not its last event: {events}")


def _example(summary: BackfillSummary, text: str) -> None:
    if len(summary.examples) < 10:
        summary.examples.append(text)
