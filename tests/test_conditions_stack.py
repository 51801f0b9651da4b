"""Conditions on the real stack: Postgres -> walhook cdc -> Kafka -> walhook publisher -> verifying receiver.

A workload changes packets' status and other columns at random, row by row, and records which of
its committed updates moved a status to ``approved`` (each change stamps a unique ``version``).
The integration subscribed to "status changed to approved" must receive exactly those; another
one, subscribed to everything, shows that every change went through; the filtered counter holds
the other updates; and a replay job with the same filter schedules exactly the same set.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import psycopg

from publisher.store import Store
from tests.conftest import Servers
from tests.support import capture_and_publisher, wait_for, write_config
from tests.test_recovery import finished, scheduled_ids
from walhook.receiver import VerifyingReceiver

PACKETS_ENTITY = '''
[[entities]]
table = "public.packets"
entity_key = "flows/packets"
entity_path = "packets/{id}"
collection_path = "packets"
organization_column = "organization_id"
'''
PACKETS_TABLE = """
CREATE TABLE packets (id serial PRIMARY KEY, organization_id text NOT NULL, status text NOT NULL,
                      title text NOT NULL, points int NOT NULL, version int NOT NULL)
"""
STATUSES = ("review", "approved", "dismissed")
APPROVED = {"subscription": "flows/packets:updated", "when": {"property": "status", "to": "approved"}}


def workload(database: str, rows: int, changes: int, seed: int) -> tuple[set[int], int]:
    """Insert ``rows``, then ``changes`` random updates; the versions that approved a packet, and every version."""
    rng = random.Random(seed)
    status: dict[int, str] = {}
    approvals: set[int] = set()
    version = 0
    with psycopg.connect(database, autocommit=True) as conn:
        for row in range(1, rows + 1):
            version += 1
            status[row] = rng.choice(STATUSES)
            conn.execute("INSERT INTO packets (organization_id, status, title, points, version) "
                         "VALUES ('acme', %s, 'new', 0, %s)", [status[row], version])
        for _ in range(changes):
            version += 1
            row, what = rng.randint(1, rows), rng.choice(["status", "title", "both", "points"])
            new = rng.choice(STATUSES) if what in ("status", "both") else status[row]
            conn.execute("UPDATE packets SET status = %s, title = CASE WHEN %s THEN md5(random()::text) ELSE title "
                         "END, points = points + CASE WHEN %s THEN 1 ELSE 0 END, version = %s WHERE id = %s",
                         [new, what in ("title", "both"), what == "points", version, row])
            if new == "approved" and status[row] != "approved":
                approvals.add(version)
            status[row] = new
    return approvals, version


async def test_status_changed_to_approved_receives_exactly_those_updates_live_and_replayed(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(PACKETS_TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, PACKETS_ENTITY)
    async with VerifyingReceiver() as receiver, Store(database) as store:
        secret = await store.add_organization("acme")
        receiver.secrets.update({"approvals": secret, "everything": secret})
        approvals_id = await store.add_integration("acme", receiver.url_for("approvals"), [APPROVED])
        await store.add_integration("acme", receiver.url_for("everything"), ["flows/packets:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            approvals, versions = await asyncio.to_thread(workload, database, 12, 300, seed=17)

            def arrived(path: str) -> list[int]:
                return [hook.event["data"]["value"]["properties"]["version"] for hook in receiver.received
                        if hook.organization == path]

            await wait_for(lambda: len(arrived("everything")) >= versions, timeout=60, what="every change")
            await wait_for(lambda: len(arrived("approvals")) >= len(approvals), timeout=30, what="the approvals")
            await asyncio.sleep(1.0)  # anything extra would arrive now
            live = {hook.webhook_id for hook in receiver.received if hook.organization == "approvals"}
            live_versions = arrived("approvals")
            rows = await store.deliveries(approvals_id, limit=1000)
            filtered = await store.filtered_counts("acme")
            health = {row["id"]: row["filtered"] for row in await store.integration_health()}
            before_replay = len(receiver.received)
            job = await finished(store, (await store.create_replay_job("acme", approvals_id, start_offset=0)).id)
            replayed = await scheduled_ids(store, approvals_id)
            await wait_for(lambda: len(receiver.received) >= before_replay + len(approvals), what="the replay")

    assert receiver.rejected == []
    assert len(approvals) > 20 and sorted(arrived("everything")) == list(range(1, versions + 1))
    assert sorted(live_versions) == sorted(approvals)  # exactly those, each once
    assert {hook.event["data"]["value"]["properties"]["status"] for hook in receiver.received
            if hook.organization == "approvals"} == {"approved"}
    updates = versions - 12
    assert len(rows) == len(approvals)  # no delivery row for a filtered event...
    assert filtered == {approvals_id: updates - len(approvals)}  # ...but each one counted
    assert health[approvals_id] == updates - len(approvals)  # and walhook status shows it
    assert (job.state, job.scheduled, job.scanned) == ("done", len(approvals), versions)
    assert replayed == live
