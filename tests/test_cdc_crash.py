"""Crash test: ``kill -9`` the CDC process at random moments while a writer commits many changes.

A writer commits 50,000 row changes in transactions of 1 to 50 changes (about one in ten
transactions is rolled back) while a chaos task SIGKILLs ``walhook cdc`` after 0.3-2 s of streaming
(half the time right after the slot's confirmed position moved, when events are most likely still on
their way to Kafka) and restarts it, at least ten times. Afterwards Kafka must hold:

* every committed change, at least once (nothing lost);
* nothing from a rolled-back transaction;
* for each eventId, identical copies only (re-reads are byte-identical), and one eventId per change;
* per entity, the changes in commit order (the first copy of each eventId, in Kafka order).

The writer keeps the ledger: for every committed transaction its xid (``txid_current()``) and the
(entity id, operation, version) of each change in execution order. The event's ``transaction.id``
and ``transaction.index`` point back into that ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from models.events import ChangeEvent
from tests.conftest import Servers
from tests.support import start_walhook, write_config
from walhook.demo import wait_for_streaming
from walhook.stack import stop_process

SEED = 20_240_501
TOTAL_CHANGES = 50_000  # committed changes; rolled-back ones come on top
ENTITIES = 2_000  # ids 1..ENTITIES: inserted, updated many times, deleted, re-inserted
MAX_TRANSACTION = 50
ROLLBACK_SHARE = 0.1
MIN_KILLS = 10
KILL_DELAY = (0.3, 2.0)  # seconds of streaming between two kills
ROLLED_BACK_MARKER = "ROLLED-BACK"
SLOT = "walhook"

TABLE = """
CREATE TABLE ledger_items (id int PRIMARY KEY, org text NOT NULL, version int NOT NULL, payload text)
"""

ENTITY = '''
[[entities]]
table = "public.ledger_items"
entity_key = "ledger/items"
entity_path = "items/{id}"
collection_path = "items"
organization_column = "org"
'''

Change = tuple[str, str, int]  # (entityId, operationType, version)


@dataclass
class Ledger:
    """What the database committed, in commit order (one writer, so execution order is commit order)."""

    transactions: list[tuple[int, list[Change]]] = field(default_factory=list)  # (xid, changes)
    rolled_back_xids: set[int] = field(default_factory=set)
    changes: int = 0

    def by_change(self) -> dict[tuple[int, int], Change]:
        """(xid, index in transaction) -> change."""
        return {(xid, index): change for xid, changes in self.transactions for index, change in enumerate(changes)}

    def per_entity(self) -> dict[str, list[tuple[tuple[int, int], Change]]]:
        """entityId -> its ((xid, index), change) in commit order."""
        order: dict[str, list[tuple[tuple[int, int], Change]]] = defaultdict(list)
        for xid, changes in self.transactions:
            for index, change in enumerate(changes):
                order[change[0]].append(((xid, index), change))
        return order


async def write_changes(database: str, total: int, rng: random.Random) -> Ledger:
    """Commit ``total`` changes through plain SQL; about ROLLBACK_SHARE of the transactions roll back."""
    ledger = Ledger()
    live: dict[int, int] = {}  # committed state: id -> version
    last_version = [0] * (ENTITIES + 1)  # per entity, never reused, even by rolled-back transactions
    async with await psycopg.AsyncConnection.connect(database) as conn:
        number = 0
        while ledger.changes < total:
            number += 1
            rollback = rng.random() < ROLLBACK_SHARE
            size = rng.randint(1, MAX_TRANSACTION if rollback else min(MAX_TRANSACTION, total - ledger.changes))
            state = dict(live)
            changes: list[Change] = []
            row = await (await conn.execute("SELECT txid_current()")).fetchone()
            assert row is not None
            xid = row[0] % 2**32  # pgoutput carries the 32-bit xid
            for position in range(size):
                item = rng.randint(1, ENTITIES)
                payload = f"{ROLLED_BACK_MARKER} {number}" if rollback else f"tx{number}.{position}"
                if item not in state:
                    last_version[item] += 1
                    await conn.execute("INSERT INTO ledger_items (id, org, version, payload) VALUES (%s, %s, %s, %s)",
                                       [item, f"org{item % 7}", last_version[item], payload])
                    state[item] = last_version[item]
                    changes.append((str(item), "created", state[item]))
                elif rng.random() < 0.1:
                    await conn.execute("DELETE FROM ledger_items WHERE id = %s", [item])
                    changes.append((str(item), "deleted", state.pop(item)))
                else:
                    last_version[item] += 1
                    await conn.execute("UPDATE ledger_items SET version = %s, payload = %s WHERE id = %s",
                                       [last_version[item], payload, item])
                    state[item] = last_version[item]
                    changes.append((str(item), "updated", state[item]))
            if rollback:
                await conn.rollback()
                ledger.rolled_back_xids.add(xid)
            else:
                await conn.commit()
                live = state
                ledger.transactions.append((xid, changes))
                ledger.changes += len(changes)
    return ledger


class CdcUnderChaos:
    """``walhook cdc`` as a real process, SIGKILLed at random moments and restarted each time."""

    def __init__(self, database: str, config: Path, workdir: Path, rng: random.Random) -> None:
        self.database = database
        self.config = config
        self.workdir = workdir
        self.rng = rng
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills = 0
        self.kills_while_writing = 0
        self.busy_slot_exits = 0  # restarts refused because the killed process's walsender still held the slot
        self.unexpected_exits: list[str] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.workdir / f"cdc-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = start_walhook("cdc", self.config, log)
        return self.process

    def log_tail(self, count: int = 3) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in self.logs[-count:])

    async def start(self) -> None:
        await wait_for_streaming(self.database, SLOT, self.spawn(), timeout=60)

    async def slot_holder(self, conn: psycopg.AsyncConnection) -> int | None:
        row = await (await conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [SLOT])).fetchone()
        return row[0] if row else None

    async def restart(self, conn: psycopg.AsyncConnection, killed_walsender: int | None) -> None:
        """Start a new process and wait until it streams; start again if it exits (slot still busy)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            process = self.spawn()
            # wait_for_streaming would see the killed process's walsender as "active": wait for a new one.
            while time.monotonic() < deadline and process.poll() is None:
                holder = await self.slot_holder(conn)
                if holder is not None and holder != killed_walsender:
                    return
                await asyncio.sleep(0.05)
            if process.poll() is None:
                break
            text = self.logs[-1].read_text(errors="replace")
            if "is in use" in text:
                self.busy_slot_exits += 1
            else:
                self.unexpected_exits.append(f"{self.logs[-1].name} (exit {process.returncode}): {text[-1500:]}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"walhook cdc did not stream again within 60s after a kill\n{self.log_tail()}")

    def slot_busy_reports(self) -> int:
        """How often a restarted process found the slot still held by the killed one's walsender."""
        return sum(log.read_text(errors="replace").count("is in use") for log in self.logs)

    async def confirmed_moves(self, conn: psycopg.AsyncConnection, timeout: float = 1.0) -> None:
        """Return as soon as the slot's confirmed position advances: the process just reported progress,
        and the transactions after it are likely still in flight to Kafka."""
        query = "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s"
        start = await (await conn.execute(query, [SLOT])).fetchone()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and await (await conn.execute(query, [SLOT])).fetchone() == start:
            await asyncio.sleep(0.002)

    async def kill_and_restart(self, conn: psycopg.AsyncConnection, writing: bool) -> None:
        assert self.process is not None
        if self.rng.random() < 0.5:
            await self.confirmed_moves(conn)
        if self.process.poll() is not None:  # it died on its own: that is a finding of its own
            self.unexpected_exits.append(f"{self.logs[-1].name} (exit {self.process.returncode}) before the kill: "
                                         f"{self.logs[-1].read_text(errors='replace')[-1500:]}")
        walsender = await self.slot_holder(conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)
        self.kills += 1
        self.kills_while_writing += writing
        await self.restart(conn, walsender)

    async def run(self, writer_done: asyncio.Event, deadline: float) -> None:
        """Kill after KILL_DELAY seconds of streaming while the writer writes, and at least MIN_KILLS times."""
        async with await psycopg.AsyncConnection.connect(self.database, autocommit=True) as conn:
            while time.monotonic() < deadline and not (writer_done.is_set() and self.kills >= MIN_KILLS):
                delay = self.rng.uniform(*KILL_DELAY)
                with contextlib.suppress(TimeoutError):  # with enough kills, the writer's end ends the chaos
                    await asyncio.wait_for(writer_done.wait() if self.kills >= MIN_KILLS else asyncio.sleep(delay),
                                           delay)
                if not (writer_done.is_set() and self.kills >= MIN_KILLS):
                    await self.kill_and_restart(conn, writing=not writer_done.is_set())

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    event: dict

    @property
    def change(self) -> tuple[int, int]:
        """(xid, index in transaction): where the ledger has this change."""
        return self.event["transaction"]["id"], self.event["transaction"]["index"]


class TopicReader:
    """Every record of the topic, in per-partition order, read by one consumer from the start."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                         enable_auto_commit=False, group_id=None)
        self.records: list[Record] = []
        self.seen: set[tuple[int, int]] = set()  # (xid, index) of every change read

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def read(self, expected: set[tuple[int, int]], timeout: float, idle: float = 10.0) -> None:
        """Read until every ``expected`` change was seen, then whatever else is there.

        Gives up after ``timeout``, or once nothing new arrived for ``idle`` seconds.
        """
        deadline = time.monotonic() + timeout
        last_record = time.monotonic()
        while True:
            batches = await self.consumer.getmany(timeout_ms=300, max_records=20_000)
            for partition, batch in batches.items():
                for message in batch:
                    event = orjson.loads(message.value)
                    self.records.append(Record(partition.partition, message.offset, message.key or b"",
                                               message.value or b"", tuple(message.headers), event))
                    self.seen.add((event["transaction"]["id"], event["transaction"]["index"]))
            now = time.monotonic()
            if batches:
                last_record = now
            if now > deadline or (not batches and (expected <= self.seen or now - last_record > idle)):
                return


def event_id(event: dict) -> str:
    """``evt_<commit LSN as 16 hex digits>_<index as 6 digits>``, as docs/concepts/events.md describes."""
    high, low = event["transaction"]["commitLsn"].split("/")
    return f"evt_{int(high, 16) << 32 | int(low, 16):016X}_{event['transaction']['index']:06d}"


def change_of(event: dict) -> Change:
    state = event["data"]["value"] or event["data"]["oldValue"]
    return event["entityId"], event["operationType"], state["properties"]["version"]


async def test_kill_9_during_a_stream_of_transactions_loses_nothing_and_keeps_order(
        database: str, servers: Servers, topic: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    # Events wait in the producer up to 50 ms before they are sent: a kill then often finds some unsent, which is
    # what a checkpoint that confirms too early would lose. (A real setting; the processes inherit it.)
    monkeypatch.setenv("WALHOOK_KAFKA__LINGER_MS", "50")
    rng = random.Random(SEED)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, ENTITY)
    cdc = CdcUnderChaos(database, config, workdir, random.Random(SEED + 1))
    try:
        await cdc.start()
        writer_done = asyncio.Event()
        chaos = asyncio.create_task(cdc.run(writer_done, deadline=time.monotonic() + 240))
        try:
            ledger = await asyncio.wait_for(write_changes(database, TOTAL_CHANGES, rng), 240)
        finally:
            writer_done.set()
            await asyncio.wait_for(chaos, 120)
        written = time.monotonic()
        expected = ledger.by_change()
        async with TopicReader(servers.bootstrap_servers, topic) as reader:
            await reader.read(set(expected), timeout=60)
            caught_up = time.monotonic()
            process = cdc.process
            assert process is not None
            await asyncio.to_thread(stop_process, process)
            await reader.read(set(), timeout=5)  # what is left, and anything produced while stopping
        records = reader.records
    finally:
        cdc.stop()

    # Each record against the ledger.
    marker = ROLLED_BACK_MARKER.encode()
    rolled_back = [r for r in records if r.change[0] in ledger.rolled_back_xids or marker in r.value]
    unknown = [r for r in records if r.change not in expected and r.change[0] not in ledger.rolled_back_xids]
    wrong_content = [r for r in records if r.change in expected and change_of(r.event) != expected[r.change]]
    wrong_ids = [r for r in records if r.event["eventId"] != event_id(r.event)]
    copies: dict[str, list[Record]] = defaultdict(list)
    ids_of_change: dict[tuple[int, int], set[str]] = defaultdict(set)
    for record in records:
        copies[record.event["eventId"]].append(record)
        ids_of_change[record.change].add(record.event["eventId"])
    lost = [change for key, change in expected.items() if key not in ids_of_change]
    different_copies = [event for event, same in copies.items()
                        if any((r.key, r.value, r.headers) != (same[0].key, same[0].value, same[0].headers)
                               for r in same)]
    several_ids = {change: ids for change, ids in ids_of_change.items() if len(ids) > 1}

    # Per entity: the first copy of each eventId, in Kafka order, must follow commit order. Compared with the
    # delivered part of the ledger, so that a lost change counts as lost, not also as out of order.
    seen: set[str] = set()
    first_copies: dict[str, list[tuple[int, int]]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for record in records:
        partitions_of[record.event["entityId"]].add(record.partition)
        if record.event["eventId"] not in seen and record.change in expected:
            seen.add(record.event["eventId"])
            first_copies[record.event["entityId"]].append(record.change)
    committed_order = {entity: [key for key, _ in changes if key in ids_of_change]
                       for entity, changes in ledger.per_entity().items()}
    out_of_order = sorted((entity for entity, keys in committed_order.items() if first_copies.get(entity, []) != keys),
                          key=int)
    split_entities = [entity for entity, partitions in partitions_of.items() if len(partitions) > 1]
    for record in {r.event["eventId"]: r for r in records}.values():
        ChangeEvent.model_validate(record.event)

    duplicates = len(records) - len(copies)
    print(f"\nchanges committed={ledger.changes}, delivered={len(records)}, duplicates={duplicates}, lost={len(lost)}, "
          f"out_of_order={len(out_of_order)}, kills={cdc.kills} ({cdc.kills_while_writing} while writing), "
          f"slot_busy={cdc.slot_busy_reports()} (exits {cdc.busy_slot_exits}), "
          f"transactions committed={len(ledger.transactions)} rolled_back={len(ledger.rolled_back_xids)}, "
          f"write={written - started:.1f}s caught_up={caught_up - started:.1f}s "
          f"total={time.monotonic() - started:.1f}s", flush=True)

    context = cdc.log_tail()
    assert cdc.kills >= MIN_KILLS
    assert not cdc.unexpected_exits, "walhook cdc exited on its own:\n" + "\n".join(cdc.unexpected_exits)
    assert process.returncode == 0, f"walhook cdc did not stop on SIGTERM (exit {process.returncode})\n{context}"
    assert not lost, f"{len(lost)} committed changes never reached Kafka, e.g. {lost[:5]}\n{context}"
    assert not rolled_back, f"{len(rolled_back)} events from rolled-back transactions, e.g. {rolled_back[0].event}"
    assert not unknown, f"{len(unknown)} events that match no committed change, e.g. {unknown[0].event}"
    assert not wrong_content, f"{len(wrong_content)} events differ from the committed change, e.g. " \
                              f"{wrong_content[0].event}"
    assert not different_copies, f"{len(different_copies)} eventIds whose copies differ, e.g. {different_copies[:3]}"
    assert not several_ids, f"{len(several_ids)} changes delivered under several eventIds, e.g. " \
                            f"{list(several_ids.items())[:3]}"
    assert not wrong_ids, f"eventId does not follow commit LSN and index: {wrong_ids[0].event}"
    assert not split_entities, f"entities spread over several partitions: {split_entities[:5]}"
    if out_of_order:
        entity = out_of_order[0]
        raise AssertionError(f"{len(out_of_order)} entities out of commit order, e.g. entity {entity}: "
                             f"Kafka {[expected[key] for key in first_copies.get(entity, [])]}, "
                             f"committed {[expected[key] for key in committed_order[entity]]}")
