"""One chaos scenario: servers, walhook's processes, the workload, a fault, and the ledger's verdict.

``run_scenario`` starts a scenario's own servers, registers the subscribers (two organizations,
integrations on different entity keys) at one ``LedgerReceiver``, starts ``walhook cdc`` and
``walhook publisher`` as supervised processes, writes the workload while the scenario's fault runs,
waits until every expected delivery arrived (or ``settle`` seconds passed), and prints the summary.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from publisher.store import Store
from tests.chaos.ledger import Ledger, Subscriber, Summary
from tests.chaos.processes import Supervised
from tests.chaos.receivers import Behaviour, LedgerReceiver
from tests.chaos.servers import ChaosServers
from tests.chaos.workload import Plan, Record, Writer, entities_config, schema
from tests.support import write_config
from walhook.demo import wait_for_publisher, wait_for_streaming

DEFAULT_CHANGES = 1_500
STEADY = [Subscriber("acme-shop", "acme", ("shop/*:*",)),
          Subscriber("acme-notes", "acme", ("docs/notes:created,updated",)), Subscriber("globex-all", "globex", ("*",)),
          Subscriber("globex-orders", "globex", ("shop/orders:*", "docs/notes:deleted"))]
PUBLISHER = """retry_delays = [0, 0.2, 0.5, {ones}]
retry_jitter = 0.1
request_timeout = 8
claim_seconds = 10
poll_interval = 0.2
allowed_networks = ["127.0.0.1/32"]""".format(ones=", ".join(["1"] * 60))


def changes_per_scenario() -> int:
    """``WALHOOK_CHAOS_CHANGES`` (committed changes per scenario), default DEFAULT_CHANGES."""
    return int(os.environ.get("WALHOOK_CHAOS_CHANGES", DEFAULT_CHANGES))


@dataclass
class Run:
    """What a fault can reach while the scenario runs."""

    servers: ChaosServers
    writer: Writer
    ledger: Ledger
    receiver: LedgerReceiver
    cdc: Supervised
    publishers: list[Supervised]
    config: Path
    rng: random.Random
    subscribers: list[Subscriber]
    notes: list[str] = field(default_factory=list)  # what the fault did, for the report

    def note(self, text: str) -> None:
        self.notes.append(f"{time.monotonic() % 1000:7.1f} {text}")


Fault = Callable[[Run], Awaitable[None]]


@dataclass
class Scenario:
    """A named scenario: its fault, subscribers, receiver behaviours and pacing."""

    name: str
    fault: Fault
    changes: int = field(default_factory=changes_per_scenario)
    write_rate: float = 300.0  # committed changes per second the writer aims at
    subscribers: list[Subscriber] = field(default_factory=lambda: list(STEADY))
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    publishers: int = 1
    persistent_broker: bool = False
    standby: bool = False  # a physical standby follows the primary (see ``tests.chaos.servers``)
    # Seconds after the writer and the fault finished, for the rest to arrive.
    settle: float = float(os.environ.get("WALHOOK_CHAOS_SETTLE", 120 + changes_per_scenario() / 100))
    seed: int = 20_261_122


async def run_scenario(scenario: Scenario) -> Summary:
    """Run ``scenario`` end to end; prints and returns the ledger's summary."""
    started = time.monotonic()
    slug = "".join(c if c.isalnum() else "-" for c in scenario.name)
    directory = Path(tempfile.mkdtemp(prefix=f"walhook-chaos-{slug}-"))
    servers = ChaosServers(directory, persistent=scenario.persistent_broker, with_standby=scenario.standby)
    await asyncio.to_thread(servers.start)
    try:
        async with LedgerReceiver(behaviours=dict(scenario.behaviours)) as receiver:
            return await _run(scenario, servers, receiver, directory, started)
    finally:
        if os.environ.get("WALHOOK_CHAOS_KEEP") == "1":  # logs and data stay for a post-mortem
            await asyncio.to_thread(servers.stop)
            print(f"  kept {directory}", flush=True)
        else:
            await asyncio.to_thread(servers.remove)


async def _run(scenario: Scenario, servers: ChaosServers, receiver: LedgerReceiver, directory: Path,
               started: float) -> Summary:
    subscribers = await _prepare(servers, receiver, scenario.subscribers)
    topic = f"walhook.chaos.{uuid.uuid4().hex[:10]}"  # an external broker keeps the topics of earlier runs
    config = write_config(directory / "walhook.toml", servers.dsn("app", find_primary=False),
                          servers.bootstrap_servers, topic, entities_config(), PUBLISHER).resolve()
    _use_store(config, servers.dsn("store", find_primary=False))
    rng = random.Random(scenario.seed)
    plan = Plan(scenario.changes, scenario.changes / scenario.write_rate,
                entities_per_table=max(50, scenario.changes // 40), large_size=max(200, scenario.changes // 20))
    writer = Writer(servers.dsn("app"), plan, random.Random(scenario.seed + 1))
    run = Run(servers, writer, Ledger([], subscribers), receiver, Supervised("cdc", config, directory),
              [Supervised("publisher", config, directory, f"publisher{n}") for n in range(scenario.publishers)],
              config, rng, subscribers)
    await _start_processes(run, servers, f"{topic}.publisher")
    ready = time.monotonic()
    try:
        record, _ = await asyncio.gather(writer.run(), scenario.fault(run))
        run.ledger = Ledger(record.changes, subscribers)
        faulted = time.monotonic()
        await _settle(run, scenario.settle)
        settled = time.monotonic()
        await asyncio.sleep(1.0)  # anything still in flight arrives now
    finally:
        await writer.close()
        await asyncio.gather(run.cdc.stop(), *(p.stop() for p in run.publishers))
    summary = run.ledger.compare(scenario.name, receiver.hits)
    _report(run, summary, record, f"start={ready - started:.0f}s writing+fault={faulted - ready:.0f}s "
            f"settle={settled - faulted:.0f}s total={time.monotonic() - started:.0f}s")
    return summary


async def _prepare(servers: ChaosServers, receiver: LedgerReceiver, subscribers: list[Subscriber]) -> list[Subscriber]:
    """Source schema, organizations and integrations; returns the subscribers with their integration ids."""
    async with await psycopg.AsyncConnection.connect(servers.dsn("app"), autocommit=True) as conn:
        await conn.execute(schema())
    registered = []
    async with Store(servers.dsn("store")) as store:
        secrets = {org: await store.add_organization(org) for org in sorted({s.organization for s in subscribers})}
        for subscriber in subscribers:
            receiver.secrets[subscriber.name] = secrets[subscriber.organization]
            number = await store.add_integration(subscriber.organization, receiver.url(subscriber.name),
                                                 list(subscriber.events), subscriber.name)
            registered.append(Subscriber(subscriber.name, subscriber.organization, subscriber.events, number))
    return registered


def _use_store(config: Path, store_dsn: str) -> None:
    """The shared config helper puts the store in the source database; the chaos suite keeps it apart."""
    text = config.read_text()
    head, _, tail = text.partition("[store]\ndsn = ")
    config.write_text(f'{head}[store]\ndsn = "{store_dsn}"{tail[tail.index(chr(10)):]}')


async def _start_processes(run: Run, servers: ChaosServers, group: str) -> None:
    run.cdc.start()
    assert run.cdc.process is not None
    await wait_for_streaming(servers.dsn("app"), "walhook", run.cdc.process, timeout=60)
    for publisher in run.publishers:
        publisher.start()
    assert run.publishers[0].process is not None
    await wait_for_publisher(servers.bootstrap_servers, group, run.publishers[0].process, 60)


async def _settle(run: Run, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while run.ledger.outstanding(run.receiver.hits) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


def _report(run: Run, summary: Summary, record: Record, timing: str) -> None:
    print(f"\n{summary.line()}", flush=True)
    processes = [run.cdc, *run.publishers]
    print(f"  {timing}; workload {record}; kills " + ", ".join(f"{p.name}={p.kills}" for p in processes)
          + f"; receiver faults {dict(run.receiver.answers)}", flush=True)
    for process in processes:
        if process.exits:
            print(f"  {process.name} exited by itself {len(process.exits)}x, e.g. {process.exits[:2]}", flush=True)
        for line in process.errors():
            print(f"  {process.name} log: {line[:300]}", flush=True)
    for note in run.notes + summary.examples[:5]:
        print(f"  {note}", flush=True)
