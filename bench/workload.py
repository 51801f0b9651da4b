"""The walhook side of the delivery benchmark: store setup, synthetic events, real publisher processes.

``run_walhook`` is one timed run (see bench/delivery.py for the workload and how it is timed); the
smoke test runs it with tiny sizes. Each run has its own store schema, topic and consumer group, so
runs share one Postgres and one broker without seeing each other; the schema is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.receivers import HangingEndpoint
from cdc.kafka import ensure_topic
from models.settings import KafkaSettings, PublisherSettings
from publisher.routing.matching import SubscriptionItem
from publisher.store import Store
from walhook.stack import spawn, stop_process

ORGANIZATION = "org_bench"
EVENT_SIZE = 1000  # bytes of JSON per event, roughly


@dataclass(frozen=True)
class Workload:
    events: int
    integrations: int
    entities: int = 1000  # per entity key
    partitions: int = 6
    concurrency: int = PublisherSettings().concurrency_per_integration

    @property
    def connections(self) -> int:
        """How many requests walhook has in flight at most: one lane of ``concurrency`` per integration."""
        return self.integrations * self.concurrency

    def describe(self) -> dict[str, Any]:
        return {"events": self.events, "integrations": self.integrations, "entities_per_key": self.entities,
                "partitions": self.partitions, "concurrency_per_integration": self.concurrency,
                "deliveries": self.events, "event_bytes": len(sample_body(self))}


@dataclass
class Run:
    name: str
    publishers: int
    deliveries: int
    seconds: float
    produce_seconds: float
    attempts: int
    peak_rss_mb: list[float] = field(default_factory=list)
    hanging_connections: int = 0  # opened to the endpoint that never answers
    filtered: int = 0  # events the integrations' conditions filtered out (counted by the publishers)

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds

    def describe(self) -> dict[str, Any]:
        return {"publishers": self.publishers, "deliveries": self.deliveries, "seconds": round(self.seconds, 2),
                "deliveries_per_s": round(self.per_second), "produce_seconds": round(self.produce_seconds, 2),
                "attempts": self.attempts, "peak_rss_mb": self.peak_rss_mb,
                "hanging_connections": self.hanging_connections, "filtered": self.filtered}


def event(number: int, workload: Workload) -> dict[str, Any]:
    """Event ``number``: entity key ``number % integrations``, then entity and change number in turn."""
    key, rest = number % workload.integrations, number // workload.integrations
    entity, seq = rest % workload.entities + 1, rest // workload.entities
    path = f"workspaces/ws{key}/records/{entity}"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    value = {"key": path, "properties": {
        "id": entity, "seq": seq, "workspaceId": f"ws{key}", "title": f"Record {entity} of workspace {key}",
        "status": "open" if seq % 3 else "in_review", "amount": f"{entity * 12.5:.2f}", "currency": "EUR",
        "ownerEmail": f"owner{entity % 97}@example.com", "tags": ["bench", f"k{key}", f"s{seq % 5}"],
        "note": ""}, "createTime": "2026-01-05T09:30:00Z", "updateTime": now}
    body = {"eventTimestamp": now, "operationType": "created" if seq == 0 else "updated", "entityPath": path,
            "entityId": str(entity), "entityKey": f"bench/records{key}",
            "collectionPath": f"workspaces/ws{key}/records",
            "organizationId": ORGANIZATION, "eventId": f"evt_{number + 1:016X}_000000",
            "data": {"value": value, "oldValue": None, "updateMask": None if seq == 0 else ["status", "note"]},
            "transaction": {"id": number + 1, "commitLsn": f"0/{number + 1:X}", "index": 0}}
    # Pad to the nominal size, like a row with a longer text column.
    value["properties"]["note"] = "x" * max(0, EVENT_SIZE - len(orjson.dumps(body)))  # type: ignore[index]
    return body


def sample_body(workload: Workload) -> bytes:
    """What wrk posts: an event of the same size as walhook's."""
    return orjson.dumps(event(0, workload))


def messages(workload: Workload) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of every event, keyed like the CDC keys them: ``organizationId|entityPath``."""
    found = []
    for number in range(workload.events):
        body = event(number, workload)
        headers = [("walhook-event-id", body["eventId"].encode()), ("walhook-organization-id", ORGANIZATION.encode()),
                   ("walhook-entity-key", body["entityKey"].encode()),
                   ("walhook-operation-type", body["operationType"].encode())]
        found.append((f"{ORGANIZATION}|{body['entityPath']}".encode(), orjson.dumps(body), headers))
    return found


async def produce(bootstrap_servers: str, topic: str, workload: Workload) -> float:
    """Produce every event, acknowledged by Kafka; returns the seconds it took."""
    batch = messages(workload)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20,
                                max_batch_size=1_048_576)
    await producer.start()
    started = time.perf_counter()
    try:
        for start in range(0, len(batch), 5000):
            sent = [await producer.send(topic, value, key=key, headers=headers)
                    for key, value, headers in batch[start:start + 5000]]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def config(path: Path, dsn: str, bootstrap_servers: str, topic: str, schema: str) -> Path:
    path.write_text(f'[kafka]\nbootstrap_servers = "{bootstrap_servers}"\ntopic = "{topic}"\n'
                    f'consumer_group = "{topic}.publisher"\n\n[store]\ndsn = "{dsn}"\nschema = "{schema}"\n'
                    'plaintext_secrets = true\n\n'
                    '[publisher]\nallowed_networks = ["127.0.0.1/32"]\nrequest_timeout = 10\n')
    return path


Subscriptions = Callable[[int], list[SubscriptionItem]]
"""What integration ``n`` subscribes to."""


def own_key(n: int) -> list[SubscriptionItem]:
    """The default: integration ``n`` subscribes to its own entity key, so each event is one delivery."""
    return [f"bench/records{n}:*"]


async def register(dsn: str, schema: str, receiver_url: str, workload: Workload, hanging_url: str | None,
                   subscriptions: Subscriptions = own_key) -> tuple[list[int], int | None]:
    """The organization and its integrations: healthy ids, and the hanging one's (None without)."""
    async with Store(dsn, schema) as store:
        await store.add_organization(ORGANIZATION)
        healthy = [await store.add_integration(ORGANIZATION, f"{receiver_url}/i{n}", subscriptions(n),
                                               f"receiver {n}") for n in range(workload.integrations)]
        hanging = None if hanging_url is None else await store.add_integration(
            ORGANIZATION, hanging_url, ["bench/records0:*"], "never answers")
    return healthy, hanging


async def group_members(bootstrap_servers: str, group: str) -> tuple[str, int]:
    """The consumer group's state and how many members it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        (response,) = await admin.describe_consumer_groups([group])
        return str(response.groups[0][2]), len(response.groups[0][5])
    finally:
        await admin.close()


async def wait_for_group(bootstrap_servers: str, group: str, processes: list[Any], timeout: float = 90) -> None:
    """Until every publisher is a member of the Stable group (the join is not part of the timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await group_members(bootstrap_servers, group) == ("Stable", len(processes)):
            return
        if any(process.poll() is not None for process in processes):
            raise RuntimeError("a walhook publisher exited before joining its group; see its log")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the publishers did not join group {group} within {timeout:.0f}s")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def succeeded(conn: psycopg.AsyncConnection[Any], schema: str, ids: list[int]) -> int:
    cursor = await conn.execute(f'SELECT count(*) FROM "{schema}".deliveries WHERE status = \'succeeded\' '
                                "AND integration_id = ANY(%s)", [ids])
    return int((await cursor.fetchone() or [0])[0])


async def timing(conn: psycopg.AsyncConnection[Any], schema: str, ids: list[int]) -> tuple[float, int]:
    """Seconds from the first attempt to the last delivery recorded succeeded, and the attempt count."""
    cursor = await conn.execute(
        f'SELECT extract(epoch FROM (SELECT max(updated_at) FROM "{schema}".deliveries WHERE integration_id = ANY(%s))'
        f' - min(started_at)), count(*) FROM "{schema}".attempt_log WHERE integration_id = ANY(%s)', [ids, ids])
    row = await cursor.fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


async def wait_delivered(dsn: str, schema: str, ids: list[int], expected: int, processes: list[Any],
                         timeout: float) -> None:
    """Until the store holds ``expected`` succeeded deliveries of ``ids``."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while (done := await succeeded(conn, schema, ids)) < expected:
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise RuntimeError(f"{done} of {expected} deliveries succeeded; see the publisher logs")
            await asyncio.sleep(0.5)


async def filtered(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    cursor = await conn.execute(f'SELECT coalesce(sum(events), 0) FROM "{schema}".filtered_events')
    return int((await cursor.fetchone() or [0])[0])


async def run_walhook(dsn: str, bootstrap_servers: str, workdir: Path, name: str, receiver_url: str,
                      workload: Workload, publishers: int = 1, hanging: bool = False, timeout: float = 600,
                      subscriptions: Subscriptions = own_key) -> Run:
    """One timed run: register, start the publishers, wait for their group, produce, wait until delivered."""
    topic, schema = f"bench.delivery.{name}.{time.time_ns()}", f"bench_{name}"
    async with HangingEndpoint() as endpoint:
        healthy, _ = await register(dsn, schema, receiver_url, workload, endpoint.url if hanging else None,
                                    subscriptions)
        await ensure_topic(KafkaSettings(bootstrap_servers=bootstrap_servers, topic=topic,
                                         partitions=workload.partitions))
        path = config(workdir / f"{name}.toml", dsn, bootstrap_servers, topic, schema)
        processes = [spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", "publisher", "--config",
                            str(path)], workdir / f"{name}-publisher-{n}.log") for n in range(publishers)]
        try:
            await wait_for_group(bootstrap_servers, f"{topic}.publisher", processes)
            produce_seconds = await produce(bootstrap_servers, topic, workload)
            await wait_delivered(dsn, schema, healthy, workload.events, processes, timeout)
            rss = [peak_rss_mb(process.pid) for process in processes]
        finally:
            for process in processes:
                await asyncio.to_thread(stop_process, process)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            seconds, attempts = await timing(conn, schema, healthy)
            dropped = await filtered(conn, schema)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return Run(name, publishers, workload.events, seconds, produce_seconds, attempts, rss, endpoint.connections,
               dropped)
