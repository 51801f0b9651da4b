"""Crash test: ``kill -9`` the publisher at random moments during 10,000 deliveries to three receivers.

Synthetic events (no CDC) are produced straight to a 4-partition topic, keyed like the CDC keys them
(``organizationId|entityPath``): ENTITIES entities x CHANGES changes, one round (one change per entity) every
ROUND_PAUSE seconds, each change carrying its per-entity sequence number in ``data.value.properties.seq``. One
organization has three integrations, each at its own ScriptedReceiver (real HTTP on 127.0.0.1, every
request verified with ``standardwebhooks``); one of them answers 500 to about half its requests.

A chaos task SIGKILLs ``walhook publisher`` and restarts it each time: 0.5-2 s after a process began
delivering, and after such a kill sometimes 0.5-2 s after the new process started (before its consumer joined
the group), at least MIN_KILLS times, DELIVERING_KILLS of them while delivering. A restarted process needs
~19 s to deliver again (the group waits for the killed member's session to time out), so a kill costs time.
The last process then runs until every (event, integration) was answered 2xx and the store holds every
delivery as succeeded. Afterwards:

* every (event, integration) had at least one verified request answered 2xx (nothing lost);
* every request verified, and carried the body exactly as produced;
* all requests for one (event, integration) share one webhook-id, ``{eventId}_i{integrationId}``
  (duplicates are recognisable);
* per entity and receiver, the first successful deliveries follow the per-entity sequence (commit order);
* no change of an entity is attempted at a receiver before every earlier change of that entity was
  answered 2xx there ("a later change is not attempted while an earlier one is pending"). Repeats of an
  already delivered change after a later one are allowed: that is at-least-once after a crash, and
  they are counted (``replays``);
* the store: one delivery per (event, integration), all ``succeeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from cdc.kafka import ensure_topic
from models.settings import KafkaSettings
from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver
from tests.support import start_walhook, write_config
from walhook.demo import wait_for_publisher
from walhook.stack import stop_process

SEED = 20_240_777
ORGANIZATION = "acme"
ENTITY_KEY = "ledger/items"
ENTITIES = 340
CHANGES = 10  # per entity: 3,400 events, 10,200 deliveries to three integrations
PARTITIONS = 4
ROUND_PAUSE = 3.0  # seconds between two rounds of changes (one change per entity): 27 s of producing
MIN_KILLS = 4
DELIVERING_KILLS = 3  # of them while the process delivers
STARTING_KILLS = 1  # of them while the process starts (before its consumer joined the group)
KILL_DELAY = (0.5, 2.0)  # seconds of delivering (or starting) before a kill
# A restarted process delivers only once its consumer joined the group, which waits for the killed member's session
# to time out (~10 s) and takes ~19 s in all on the local broker. Without a request for this long it is killed anyway.
PROGRESS_TIMEOUT = 30.0
CHAOS_SECONDS = 90.0
FINISH_SECONDS = 90.0  # after the chaos: until everything is delivered
FLAKY_SHARE = 0.5  # the flaky receiver answers 500 to about this share of its requests
FLAKY_MAX_FAILURES = 5  # ... but at most this many times per webhook-id, so the schedule below never runs out
RECEIVERS = ("steady", "second", "flaky")

PUBLISHER = """retry_delays = [0, 0.2, 0.4, 0.8, 1, 1, 1, 1, 1, 1, 1, 1]
claim_seconds = 3
poll_interval = 0.2
request_timeout = 2
allowed_networks = ["127.0.0.1/32"]"""


def make_events() -> list[dict[str, Any]]:
    """Round r holds change r of every entity; eventIds are unique and increase in produce order."""
    events = []
    for seq in range(CHANGES):
        for entity in range(1, ENTITIES + 1):
            number = len(events) + 1
            path = f"items/{entity}"
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            value = {"key": path, "properties": {"id": entity, "seq": seq, "note": f"change {seq} of {entity}"},
                     "createTime": None, "updateTime": None}
            old = None if seq == 0 else {**value, "properties": {**value["properties"], "seq": seq - 1}}
            events.append({
                "eventTimestamp": now, "operationType": "created" if seq == 0 else "updated",
                "entityPath": path, "entityId": str(entity), "entityKey": ENTITY_KEY, "collectionPath": "items",
                "organizationId": ORGANIZATION,
                "data": {"value": value, "oldValue": old, "updateMask": None if seq == 0 else ["seq", "note"]},
                "eventId": f"evt_{number:016X}_000000",
                "transaction": {"id": number, "commitLsn": f"0/{number:X}", "index": 0},
            })
    return events


async def produce(bootstrap_servers: str, topic: str, events: list[dict[str, Any]], done: asyncio.Event) -> None:
    """One round (one change per entity) at a time, acknowledged by Kafka (acks=all), ROUND_PAUSE apart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(events), ENTITIES):
            sent = []
            for event in events[start:start + ENTITIES]:
                headers = [("walhook-event-id", event["eventId"].encode()),
                           ("walhook-organization-id", ORGANIZATION.encode()),
                           ("walhook-entity-key", ENTITY_KEY.encode()),
                           ("walhook-operation-type", event["operationType"].encode())]
                sent.append(await producer.send(topic, orjson.dumps(event), headers=headers,
                                                key=f"{event['organizationId']}|{event['entityPath']}".encode()))
            await asyncio.gather(*sent)
            if start + ENTITIES < len(events):
                await asyncio.sleep(ROUND_PAUSE)
    finally:
        await producer.stop()
        done.set()


@dataclass
class Endpoint:
    """One receiver, with the status it answered to each of its requests (by position in ``hits``)."""

    name: str
    receiver: ScriptedReceiver
    rng: random.Random
    flaky: bool = False
    integration_id: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)

    def script(self, path: str, count: int) -> Answer:
        # Called right after the receiver appended the request's hit, with no await in between.
        index = len(self.receiver.hits) - 1
        hit = self.receiver.hits[index]
        status = 204
        if hit.event is None:
            status = 401
        elif self.flaky and self.rng.random() < FLAKY_SHARE and self.failures[hit.webhook_id] < FLAKY_MAX_FAILURES:
            self.failures[hit.webhook_id] += 1
            status = 500
        self.statuses[index] = status
        # A few slow answers widen the window in which a kill finds requests in flight.
        return Answer(status, delay=self.rng.uniform(0.005, 0.05) if self.rng.random() < 0.1 else 0.0)

    def succeeded(self, index: int) -> bool:
        return 200 <= self.statuses.get(index, 0) < 300


def delivered_pairs(endpoints: list[Endpoint]) -> set[tuple[str, str]]:
    """(eventId, receiver) with at least one verified request answered 2xx."""
    return {(hit.event["eventId"], endpoint.name) for endpoint in endpoints
            for index, hit in enumerate(endpoint.receiver.hits) if hit.event is not None and endpoint.succeeded(index)}


def total_hits(endpoints: list[Endpoint]) -> int:
    return sum(len(endpoint.receiver.hits) for endpoint in endpoints)


class PublisherUnderChaos:
    """``walhook publisher`` as a real process, SIGKILLed at random moments and restarted each time."""

    def __init__(self, config: Path, workdir: Path, endpoints: list[Endpoint], expected: int,
                 rng: random.Random) -> None:
        self.config = config
        self.expected = expected
        self.workdir = workdir
        self.endpoints = endpoints
        self.rng = rng
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills: Counter[str] = Counter()  # by what the process was doing: delivering, starting, idle
        self.kills_while_producing = 0
        self.unexpected_exits: list[str] = []
        self.timeline: list[str] = []  # spawns, first requests, kills (seconds since the first spawn)
        self._epoch = time.monotonic()

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self._epoch:6.1f}s {what}")

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.workdir / f"publisher-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = start_walhook("publisher", self.config, log)
        self.note(f"spawned {log.stem} (pid {self.process.pid})")
        return self.process

    def log_tail(self, count: int = 3) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in self.logs[-count:])

    def log_lines(self, marker: str) -> list[str]:
        return [line for log in self.logs for line in log.read_text(errors="replace").splitlines() if marker in line]

    def outstanding(self) -> int:
        return self.expected - len(delivered_pairs(self.endpoints))

    async def wait_for_progress(self, since: int, timeout: float) -> bool:
        """True once the receivers got a request more than ``since``; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if total_hits(self.endpoints) > since:
                return True
            await asyncio.sleep(0.02)
        return False

    async def kill_and_restart(self, doing: str, producing: bool) -> None:
        assert self.process is not None
        if self.process.poll() is not None:  # it died on its own: a finding of its own
            self.unexpected_exits.append(f"{self.logs[-1].name} (exit {self.process.returncode}) before the kill: "
                                         f"{self.logs[-1].read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)
        self.kills[doing] += 1
        self.kills_while_producing += producing
        self.note(f"killed {self.logs[-1].stem} while {doing}{' (and producing)' if producing else ''}, "
                  f"{self.outstanding()} deliveries outstanding")
        self.spawn()

    async def run(self, produced: asyncio.Event, deadline: float) -> None:
        """Kill each process KILL_DELAY seconds after it began delivering; after such a kill, kill the next one
        KILL_DELAY seconds after its start (before it joined its consumer group), STARTING_KILLS times.
        Until MIN_KILLS kills, DELIVERING_KILLS of them while delivering."""
        since = total_hits(self.endpoints)
        while time.monotonic() < deadline and (sum(self.kills.values()) < MIN_KILLS
                                                or self.kills["delivering"] < DELIVERING_KILLS):
            if self.kills["delivering"] > self.kills["starting"] and self.kills["starting"] < STARTING_KILLS:
                doing = "starting"
            elif await self.wait_for_progress(since, PROGRESS_TIMEOUT):
                self.note("requests arrive")
                doing = "delivering"
            else:
                doing = "idle"
            await asyncio.sleep(self.rng.uniform(*KILL_DELAY))
            since = total_hits(self.endpoints)
            await self.kill_and_restart(doing, producing=not produced.is_set())

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


async def store_statuses(database: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT status, count(*) FROM walhook.deliveries GROUP BY status")).fetchall()
    return {status: count for status, count in rows}


async def wait_until_done(database: str, endpoints: list[Endpoint], expected: set[tuple[str, str]],
                          timeout: float) -> dict[str, int]:
    """Until every expected (event, receiver) got a 2xx and the store says so too; the store's counts."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        if expected <= delivered_pairs(endpoints):
            statuses = await store_statuses(database)
            if statuses == {"succeeded": len(expected)}:
                return statuses
        await asyncio.sleep(0.25)
    return statuses or await store_statuses(database)


async def explain(database: str, endpoint: Endpoint, entity: str) -> str:
    """What the receiver saw of one entity, and what the store says about its deliveries: for a failure message."""
    seen = [f"  {hit.at % 1000:8.3f} seq {hit.event['data']['value']['properties']['seq']:2d} "
            f"-> {endpoint.statuses.get(index)}" for index, hit in enumerate(endpoint.receiver.hits)
            if hit.event is not None and hit.event["entityId"] == entity]
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        rows = await (await conn.execute(
            "SELECT d.id, d.event_id, d.status, d.attempts, d.source_partition, d.source_offset, "
            "mod(extract(epoch FROM d.created_at)::numeric, 1000), (SELECT string_agg('#' || a.number || ' ' || "
            "coalesce(a.response_status::text, a.error) || ' at ' || "
            "round(mod(extract(epoch FROM a.started_at)::numeric, 1000), 3), ', ' ORDER BY a.id) "
            "FROM walhook.attempt_log a WHERE a.delivery_id = d.id) "
            "FROM walhook.deliveries d WHERE d.integration_id = %s AND d.entity_path = %s ORDER BY d.id",
            [endpoint.integration_id, f"items/{entity}"])).fetchall()
    stored = [f"  delivery {r[0]} {r[1]} {r[2]} attempts={r[3]} from {r[4]}@{r[5]} created {float(r[6]):8.3f}: "
              f"{r[7]}" for r in rows]
    return (f"receiver {endpoint.name}, entity {entity}, requests (time, seq -> status):\n" + "\n".join(seen)
            + "\nstore:\n" + "\n".join(stored))


@dataclass
class OrderReport:
    first_success: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (receiver, entity) -> seqs
    overtakes: list[tuple[Endpoint, str, str]] = field(default_factory=list)  # (receiver, entity, what happened)
    replays: int = 0  # a change attempted again after a later change of its entity was attempted


def check_order(endpoints: list[Endpoint]) -> OrderReport:
    report = OrderReport()
    for endpoint in endpoints:
        delivered: dict[str, set[int]] = defaultdict(set)
        highest: dict[str, int] = defaultdict(lambda: -1)
        for index, hit in enumerate(endpoint.receiver.hits):
            if hit.event is None:
                continue
            entity, seq = hit.event["entityId"], hit.event["data"]["value"]["properties"]["seq"]
            missing = [earlier for earlier in range(seq) if earlier not in delivered[entity]]
            if missing:
                report.overtakes.append((endpoint, entity, f"{endpoint.name}: entity {entity} change {seq} "
                                         f"({hit.webhook_id}) attempted before change(s) {missing[:5]} were delivered"))
            if seq < highest[entity]:
                report.replays += 1
            highest[entity] = max(highest[entity], seq)
            if endpoint.succeeded(index) and seq not in delivered[entity]:
                delivered[entity].add(seq)
                report.first_success.setdefault((endpoint.name, entity), []).append(seq)
    return report


async def test_kill_9_during_10000_deliveries_loses_nothing_and_keeps_entity_order(
        database: str, servers: Servers, topic: str, workdir: Path) -> None:
    started = time.monotonic()
    events = make_events()
    by_id = {event["eventId"]: event for event in events}
    await ensure_topic(KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=PARTITIONS))
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, "", PUBLISHER)

    async with contextlib.AsyncExitStack() as stack:
        endpoints = []
        for number, name in enumerate(RECEIVERS):
            endpoint = Endpoint(name, ScriptedReceiver(), random.Random(SEED + 10 + number), flaky=name == "flaky")
            endpoint.receiver.scripts[name] = endpoint.script
            await stack.enter_async_context(endpoint.receiver)
            endpoints.append(endpoint)
        async with Store(database) as store:
            secret = await store.add_organization(ORGANIZATION)
            for endpoint in endpoints:
                endpoint.receiver.secrets[endpoint.name] = secret
                endpoint.integration_id = await store.add_integration(
                    ORGANIZATION, endpoint.receiver.url(endpoint.name), [f"{ENTITY_KEY}:*"], endpoint.name)
        expected = {(event["eventId"], endpoint.name) for event in events for endpoint in endpoints}

        chaos = PublisherUnderChaos(config, workdir, endpoints, len(expected), random.Random(SEED + 1))
        try:
            await wait_for_publisher(servers.bootstrap_servers, f"{topic}.publisher", chaos.spawn(), timeout=60)
            ready = time.monotonic()
            produced = asyncio.Event()
            producer = asyncio.create_task(produce(servers.bootstrap_servers, topic, events, produced))
            try:
                await asyncio.wait_for(chaos.run(produced, deadline=time.monotonic() + CHAOS_SECONDS),
                                       CHAOS_SECONDS + 30)
            finally:
                await asyncio.wait_for(producer, 60)
            chaos_over = time.monotonic()
            statuses = await wait_until_done(database, endpoints, expected, FINISH_SECONDS)
            done = time.monotonic()
            await asyncio.sleep(0.5)  # anything extra would arrive now
            process = chaos.process
            assert process is not None
            await asyncio.to_thread(stop_process, process)
        finally:
            chaos.stop()

    # What the receivers saw.
    delivered = delivered_pairs(endpoints)
    lost = sorted(expected - delivered)
    rejected = [(endpoint.name, hit.webhook_id) for endpoint in endpoints for hit in endpoint.receiver.hits
                if hit.event is None]
    wrong_body = [(endpoint.name, hit.webhook_id) for endpoint in endpoints for hit in endpoint.receiver.hits
                  if hit.event is not None and hit.event != by_id.get(hit.event["eventId"])]
    ids_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for endpoint in endpoints:
        for hit in endpoint.receiver.hits:
            if hit.event is not None:
                ids_of[(hit.event["eventId"], endpoint.name)].add(hit.webhook_id)
    integration_of = {endpoint.name: endpoint.integration_id for endpoint in endpoints}
    wrong_ids = {pair: ids for pair, ids in ids_of.items() if ids != {f"{pair[0]}_i{integration_of[pair[1]]}"}}
    successes = Counter((hit.event["eventId"], endpoint.name) for endpoint in endpoints
                        for index, hit in enumerate(endpoint.receiver.hits)
                        if hit.event is not None and endpoint.succeeded(index))
    duplicates = sum(count - 1 for count in successes.values())
    failed_answers = sum(1 for endpoint in endpoints for status in endpoint.statuses.values() if status >= 300)
    requests = total_hits(endpoints)

    order = check_order(endpoints)
    out_of_order = sorted(key for key, seqs in order.first_success.items() if seqs != sorted(seqs))

    flaky = next(endpoint for endpoint in endpoints if endpoint.flaky)
    flaky_share = sum(1 for s in flaky.statuses.values() if s >= 300) / max(1, len(flaky.statuses))
    print(f"\ndeliveries expected={len(expected)}, delivered={len(delivered)}, duplicates={duplicates}, "
          f"lost={len(lost)}, out_of_order={len(out_of_order)} {dict(Counter(name for name, _ in out_of_order))}, "
          f"overtakes={len(order.overtakes)}, "
          f"replays={order.replays}, kills={sum(chaos.kills.values())} ({dict(chaos.kills)}, "
          f"{chaos.kills_while_producing} while producing), requests={requests}, failed_answers={failed_answers} "
          f"(flaky receiver {flaky_share:.0%}), rejected={len(rejected)}, store={statuses}, "
          f"startup={ready - started:.1f}s chaos={chaos_over - ready:.1f}s finish={done - chaos_over:.1f}s "
          f"total={time.monotonic() - started:.1f}s", flush=True)
    print("timeline:\n" + "\n".join(chaos.timeline), flush=True)
    story = ""  # the first entity whose order broke: what its receiver saw and what the store recorded
    if out_of_order or order.overtakes:
        by_name = {endpoint.name: endpoint for endpoint in endpoints}
        endpoint, entity = (by_name[out_of_order[0][0]], out_of_order[0][1]) if out_of_order \
            else order.overtakes[0][:2]
        story = await explain(database, endpoint, entity)
        print(story, flush=True)
    errors = chaos.log_lines(" ERROR ") + chaos.log_lines("Traceback")
    if errors:
        print(f"publisher log errors ({len(errors)}), e.g.:\n" + "\n".join(errors[:5]), flush=True)

    context = chaos.log_tail()
    assert sum(chaos.kills.values()) >= MIN_KILLS and chaos.kills["delivering"] >= DELIVERING_KILLS, chaos.timeline
    assert not chaos.unexpected_exits, "walhook publisher exited on its own:\n" + "\n".join(chaos.unexpected_exits)
    assert process.returncode == 0, f"walhook publisher did not stop on SIGTERM (exit {process.returncode})\n{context}"
    assert not lost, f"{len(lost)} (event, receiver) never answered 2xx, e.g. {lost[:5]}; store {statuses}\n{context}"
    assert not rejected, f"{len(rejected)} requests did not verify, e.g. {rejected[:5]}"
    assert not wrong_body, f"{len(wrong_body)} requests whose body differs from the produced event: {wrong_body[:5]}"
    assert not wrong_ids, f"{len(wrong_ids)} (event, receiver) with other webhook-ids: {list(wrong_ids.items())[:5]}"
    if out_of_order:
        key = out_of_order[0]
        raise AssertionError(f"{len(out_of_order)} (receiver, entity) got their first deliveries out of commit "
                             f"order, e.g. {key}: {order.first_success[key]}\n{story}")
    examples = "\n".join(what for _, _, what in order.overtakes[:5])
    assert not order.overtakes, f"{len(order.overtakes)} changes attempted before an earlier change of their " \
                                f"entity was delivered, e.g.\n{examples}\n{story}"
    assert statuses == {"succeeded": len(expected)}, f"store deliveries by status: {statuses}, expected " \
                                                     f"{len(expected)} succeeded\n{context}"
