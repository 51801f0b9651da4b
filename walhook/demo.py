"""``walhook demo``: the real pipeline on a local stack, with verified webhooks on screen.

It starts Postgres and the Kafka broker, creates a small app schema (organizations,
projects, packets, packet comments), registers one integration per organization pointing
at a receiver on 127.0.0.1 that verifies every request with ``standardwebhooks``, runs
``walhook cdc`` and ``walhook publisher`` as separate processes from a config file, and
writes rows through plain SQL the way an unchanged app would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg

from control.actor import ALL_CAPABILITIES
from control.portal.access import create_link
from control.portal.links import MAX_EXPIRY
from models.errors import WalhookError
from models.settings import PortalSettings
from publisher.routing.matching import matches_any, parse_subscription
from publisher.service import consumer_group_state
from publisher.store import Store
from walhook.cli.common import stop_on_signals
from walhook.receiver import ReceivedWebhook, VerifyingReceiver
from walhook.stack import LocalStack, free_port, spawn, stop_process

ORGANIZATIONS = ("acme", "globex")
SUBSCRIPTIONS = {"acme": ["flows/*:*"], "globex": ["flows/comments:*", "flows/packets:created,updated"]}

APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS organizations (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id serial PRIMARY KEY, organization_id text NOT NULL REFERENCES organizations,
    name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS packets (
    id serial PRIMARY KEY, organization_id text NOT NULL REFERENCES organizations,
    project_id int NOT NULL REFERENCES projects, title text NOT NULL, status text NOT NULL DEFAULT 'open',
    labels text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS packet_comments (
    id serial PRIMARY KEY, organization_id text NOT NULL REFERENCES organizations,
    packet_id int NOT NULL REFERENCES packets ON DELETE CASCADE, content text NOT NULL,
    created_by text NOT NULL, soft_removed boolean NOT NULL DEFAULT false, internal_note text,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
"""


def demo_config(dsn: str, bootstrap_servers: str, api_port: int = 8080, admin_token: str = "") -> str:
    """The TOML the demo's processes read: three entities in the spirit of the seed payloads."""
    return f'''# Written by `walhook demo`.
[api]
port = {api_port}
admin_token = "{admin_token or secrets.token_urlsafe(24)}"

[source]
dsn = "{dsn}"
slot = "walhook_demo"
publication = "walhook_demo"
status_interval = 0.5

[kafka]
bootstrap_servers = "{bootstrap_servers}"
topic = "walhook.demo"
partitions = 4
linger_ms = 1

[store]
dsn = "{dsn}"
plaintext_secrets = true  # a demo; in production set secret_keys (see "Secrets at rest" in docs/guides/security.md)

[publisher]
retry_delays = [0, 0.5, 2, 5, 10]
allowed_networks = ["127.0.0.1/32"]  # the demo's receiver; private and loopback addresses are refused otherwise

[[entities]]
table = "public.projects"
entity_key = "flows/projects"
entity_path = "projects/{{id}}"
collection_path = "projects"
organization_column = "organization_id"
create_time_column = "created_at"
update_time_column = "updated_at"

[[entities]]
table = "public.packets"
entity_key = "flows/packets"
entity_path = "pipelinesPackets/{{id}}"
collection_path = "pipelinesPackets"
organization_column = "organization_id"
create_time_column = "created_at"
update_time_column = "updated_at"
property_names = "camel_case"

[[entities]]
table = "public.packet_comments"
entity_key = "flows/comments"
entity_path = "pipelinesPackets/{{packet_id}}/comments/{{id}}"
collection_path = "pipelinesPackets/{{packet_id}}/comments"
organization_column = "organization_id"
create_time_column = "created_at"
update_time_column = "updated_at"
exclude_columns = ["internal_note"]
property_names = "camel_case"
'''


class AppWriter:
    """Plays an unchanged app: plain SQL inserts, updates and deletes in both organizations."""

    def __init__(self, dsn: str, seed: int = 7) -> None:
        self._dsn = dsn
        self._rng = random.Random(seed)
        self.statements = 0
        self.changes: list[tuple[str, str, str]] = []  # (organization, entity key, operation), one per row changed

    async def setup(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            await conn.execute(APP_SCHEMA)
            for organization in ORGANIZATIONS:
                await conn.execute("INSERT INTO organizations VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                   [organization, organization.title()])

    async def run(self, stop: asyncio.Event, pause: float = 0.6) -> None:
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            for organization in itertools.cycle(ORGANIZATIONS):
                if stop.is_set():
                    return
                await self._story_step(conn, organization)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def _story_step(self, conn: psycopg.AsyncConnection, org: str) -> None:
        """One small change, chosen so that every operation type shows up within seconds."""
        project = await self._one(conn, "SELECT id FROM projects WHERE organization_id = %s ORDER BY random()", org)
        if project is None:
            await self._exec(conn, (org, "flows/projects", "created"),
                             "INSERT INTO projects (organization_id, name) VALUES (%s, %s)", org,
                             f"{org.title()} onboarding")
            return
        packet = await self._one(conn, "SELECT id FROM packets WHERE organization_id = %s ORDER BY random()", org)
        comment = await self._one(conn, "SELECT id FROM packet_comments WHERE organization_id = %s "
                                  "ORDER BY random()", org)
        choice = self._rng.random()
        if packet is None or choice < 0.25:
            await self._exec(conn, (org, "flows/packets", "created"),
                             "INSERT INTO packets (organization_id, project_id, title, labels) "
                             "VALUES (%s, %s, %s, %s)", org, project, f"Packet {self._rng.randint(100, 999)}",
                             ["intake"])
        elif comment is None or choice < 0.55:
            await self._exec(conn, (org, "flows/comments", "created"),
                             "INSERT INTO packet_comments (organization_id, packet_id, content, created_by, "
                             "internal_note) VALUES (%s, %s, %s, %s, 'never leaves the database')",
                             org, packet, self._rng.choice(["Looks good", "Needs a signature", "Approved"]),
                             f"user-{self._rng.randint(1, 5)}")
        elif choice < 0.75:
            await self._exec(conn, (org, "flows/comments", "updated"),
                             "UPDATE packet_comments SET content = content || ' (edited)', updated_at = now() "
                             "WHERE id = %s", comment)
        elif choice < 0.9:
            await self._exec(conn, (org, "flows/packets", "updated"),
                             "UPDATE packets SET status = %s, updated_at = now() WHERE id = %s",
                             self._rng.choice(["review", "approved", "done"]), packet)
        else:
            await self._exec(conn, (org, "flows/comments", "deleted"), "DELETE FROM packet_comments WHERE id = %s",
                             comment)

    async def _one(self, conn: psycopg.AsyncConnection, query: str, *params: object) -> object:
        row = await (await conn.execute(query + " LIMIT 1", params)).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None

    async def _exec(self, conn: psycopg.AsyncConnection, change: tuple[str, str, str], query: str,
                    *params: object) -> None:
        """One statement that changes exactly one row; ``change`` says which organization, entity and operation."""
        await conn.execute(query, params)  # type: ignore[arg-type]
        self.statements += 1
        self.changes.append(change)


def closing_line(changes: list[tuple[str, str, str]], verified: int, rejected: int) -> str:
    """The demo's last line: every change accounted for - verified, not subscribed to, or still in flight."""
    subscriptions = {org: [parse_subscription(text) for text in texts] for org, texts in SUBSCRIPTIONS.items()}
    unsubscribed = Counter(c for c in changes if not matches_any(subscriptions[c[0]], c[1], c[2]))
    expected = len(changes) - sum(unsubscribed.values())
    kinds = ", ".join(f"{org} {key.split('/')[-1]} {op} x{n}" for (org, key, op), n in sorted(unsubscribed.items()))
    line = (f"{len(changes)} SQL changes written, {verified} webhooks verified, {rejected} rejected; "
            f"{_changes(sum(unsubscribed.values()))} no integration subscribed to" + (f" ({kinds})" if kinds else ""))
    if verified < expected:
        line += f"; {_changes(expected - verified)} still in flight when the demo stopped"
    return line


def _changes(n: int) -> str:
    return f"{n} change" + ("" if n == 1 else "s")


def _print_webhook(hook: ReceivedWebhook) -> None:
    event = hook.event
    committed = datetime.fromisoformat(event["eventTimestamp"]).timestamp()
    print(f"{time.strftime('%H:%M:%S')}  verified  {hook.organization:<7} {event['operationType']:<8} "
          f"{event['entityPath']:<34} {event['entityKey']:<15} {hook.received_at - committed:5.2f}s after commit",
          flush=True)


async def wait_for_streaming(dsn: str, slot: str, cdc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Block until the CDC process streams from ``slot``: changes written before would not be captured."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            # Held by a walsender (pg_stat_replication), not merely active: the backend creating the slot
            # holds it as well, for a moment, before the capture's walsender takes it.
            row = await (await conn.execute(
                "SELECT s.active FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.slot_name = %s AND s.database = current_database()", [slot])).fetchone()
            if row and row[0]:
                return
            if cdc.poll() is not None:
                raise WalhookError(f"walhook cdc exited with code {cdc.returncode}; see its log")
            await asyncio.sleep(0.1)
    raise WalhookError(f"walhook cdc did not start streaming slot {slot} within {timeout:.0f}s")


async def wait_for_publisher(bootstrap_servers: str, group: str, publisher: subprocess.Popen[bytes],
                             timeout: float = 60.0) -> None:
    """Block until the publisher joined its consumer group, so the first webhooks come at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await consumer_group_state(bootstrap_servers, group) == "Stable":
            return
        if publisher.poll() is not None:
            raise WalhookError(f"walhook publisher exited with code {publisher.returncode}; see its log")
        await asyncio.sleep(0.2)
    raise WalhookError(f"walhook publisher did not join consumer group {group} within {timeout:.0f}s")


async def register_integrations(dsn: str, receiver: VerifyingReceiver) -> None:
    """One organization per tenant, each with its own secret and its own subscriptions."""
    subscriptions = SUBSCRIPTIONS
    async with Store(dsn) as store:
        for organization in ORGANIZATIONS:
            receiver.secrets[organization] = await store.add_organization(organization)
            await store.add_integration(organization, receiver.url_for(organization), subscriptions[organization])
            print(f"integration for {organization}: {receiver.url_for(organization)} <- "
                  f"{', '.join(subscriptions[organization])}", flush=True)


async def wait_for_api(port: int, api: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Block until ``walhook api`` accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise WalhookError(f"walhook api exited with code {api.returncode}; see its log")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise WalhookError(f"walhook api did not listen on port {port} within {timeout:.0f}s")


async def print_portal_links(dsn: str, port: int, admin_token: str, receiver: VerifyingReceiver,
                             api: subprocess.Popen[bytes]) -> None:
    """Once ``walhook api`` listens: the operator's sign-in and one single-use portal link per demo
    organization (every capability, 24 h). Runs beside the writer, so the API's start delays no webhook."""
    await wait_for_api(port, api)
    base = f"http://127.0.0.1:{port}"
    print(f"portal, operator: {base}/portal/login  (admin token {admin_token})", flush=True)
    async with Store(dsn) as store:
        for organization in ORGANIZATIONS:
            link = await create_link(store, PortalSettings(), base, organization, frozenset(ALL_CAPABILITIES),
                                     MAX_EXPIRY, session_id="demo")
            print(f"portal, {organization}: {link.url}  (opens once)", flush=True)
    print(f"integrations added in the portal may point at {receiver.url_for('<organization>')} with the Secret "
          "left empty: the demo's receiver checks each organization's own secret", flush=True)


def _walhook(command: str, config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", command, "--config", str(config)],
                 workdir / f"{command}.log")


async def _settled(task: asyncio.Task[None]) -> None:
    """Wait for a side task that may still run (or have failed) when the demo stops; its error is shown."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except WalhookError as exc:
            print(f"portal: {exc}", flush=True)


async def run_demo(seconds: float = 0, directory: Path | None = None) -> int:
    """Write rows for ``seconds`` once the pipeline is up (0: until Ctrl-C / SIGTERM); returns the exit code."""
    workdir = directory or Path(tempfile.mkdtemp(prefix="walhook-demo-"))
    stop = asyncio.Event()
    stop_on_signals(stop)
    stack = LocalStack(workdir / "stack")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stack.start()
        print(f"postgres {stack.dsn} | kafka {stack.bootstrap_servers} | files in {workdir}", flush=True)
        config = workdir / "walhook.toml"
        api_port, admin_token = free_port(), secrets.token_urlsafe(24)
        config.write_text(demo_config(stack.dsn or "", stack.bootstrap_servers or "", api_port, admin_token))
        writer = AppWriter(stack.dsn or "")
        await writer.setup()
        async with VerifyingReceiver(on_webhook=_print_webhook) as receiver:
            await register_integrations(stack.dsn or "", receiver)
            for command in ("cdc", "publisher"):
                processes.append(_walhook(command, config, workdir))
            await wait_for_streaming(stack.dsn or "", "walhook_demo", processes[0])
            await wait_for_publisher(stack.bootstrap_servers or "", "walhook-publisher", processes[1])
            processes.append(_walhook("api", config, workdir))
            portal = asyncio.create_task(print_portal_links(stack.dsn or "", api_port, admin_token, receiver,
                                                            processes[2]))
            print("writing rows through plain SQL; verified webhooks appear below (Ctrl-C stops)", flush=True)
            if seconds:  # counted from here: on a busy machine, starting the servers may take a while
                asyncio.get_running_loop().call_later(seconds, stop.set)
            await writer.run(stop)
            await _settled(portal)
            await asyncio.sleep(1.0)  # let the last changes arrive before shutting down
            print("\n" + closing_line(writer.changes, len(receiver.received), len(receiver.rejected)), flush=True)
            return 0 if not receiver.rejected else 1
    finally:
        for process in processes:
            stop_process(process)
        stack.stop()
