"""The latency benchmark's pipeline: a config file and real ``walhook cdc`` / ``walhook publisher`` processes.

Everything that matters for latency is set here, through configuration only: the producer's
``linger_ms``, the consumer's ``fetch_max_wait_ms``, the lane's concurrency and capacity.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from bench.procfs import status_mb
from publisher.store import Store
from walhook.demo import wait_for_publisher, wait_for_streaming
from walhook.stack import LocalStack, spawn, stop_process

ORGANIZATION = "acme"
SLOT = "bench_latency"
TABLE = """CREATE TABLE IF NOT EXISTS bench_latency (id bigint PRIMARY KEY, org text NOT NULL, name text,
           amount numeric(14,2), note text, created_at timestamptz NOT NULL DEFAULT now())"""


TUNED = """fetch_max_wait_ms = 5  # the publisher's fetch returns within 5 ms when nothing new arrived
"""
TUNED_PUBLISHER = """concurrency_per_integration = 64  # one integration takes all the traffic
lane_capacity = 50000             # a backlog waits in memory
"""


def config_text(dsn: str, store_dsn: str, bootstrap_servers: str, topic: str, tuned: bool = False,
                settings: Sequence[str] = ()) -> str:
    """The TOML both processes read: the defaults a user gets (only what names the servers, the table and
    the receiver's network), or with ``tuned`` the settings earlier runs tuned for this benchmark.

    ``settings``: more, as ``section.key=value`` (TOML value), e.g. ``kafka.linger_ms=20``."""
    extra: dict[str, str] = {"source": "", "kafka": "", "publisher": ""}
    for setting in settings:
        name, _, value = setting.partition("=")
        section, _, key = name.partition(".")
        if section not in extra or not key or not value:
            raise ValueError(f"--set {setting!r}: expected source|kafka|publisher.KEY=VALUE")
        extra[section] += f"{key} = {value}\n"
    return f'''[source]
dsn = "{dsn}"
slot = "{SLOT}"
publication = "{SLOT}"
{extra["source"]}
[kafka]
bootstrap_servers = "{bootstrap_servers}"
topic = "{topic}"
consumer_group = "{topic}.publisher"
{TUNED if tuned else ""}{extra["kafka"]}
[store]
dsn = "{store_dsn}"
plaintext_secrets = true

[publisher]
allowed_networks = ["127.0.0.1/32"]  # the receiver runs on this machine
{TUNED_PUBLISHER if tuned else ""}{extra["publisher"]}
[[entities]]
table = "public.bench_latency"
entity_key = "items"
entity_path = "items/{{id}}"
collection_path = "items"
organization_column = "org"
create_time_column = "created_at"
'''


class WalhookPipeline:
    """The two walhook processes for one run; stopped (SIGTERM, then SIGKILL) on exit.

    ``config`` (with the ``slot`` it names) replaces the latency benchmark's own configuration."""

    def __init__(self, dsn: str, store_dsn: str, bootstrap_servers: str, topic: str, workdir: Path,
                 tuned: bool = False, settings: Sequence[str] = (), *, config: str | None = None,
                 slot: str = SLOT) -> None:
        self.dsn, self.store_dsn, self.bootstrap_servers, self.topic = dsn, store_dsn, bootstrap_servers, topic
        self.workdir = workdir
        self.slot = slot
        self.config_text = config or config_text(dsn, store_dsn, bootstrap_servers, topic, tuned, settings)
        self.integration_id = 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    async def register(self, url: str) -> str:
        """One organization with one integration for every item event; returns its signing secret."""
        async with Store(self.store_dsn) as store:
            secret = await store.add_organization(ORGANIZATION)
            self.integration_id = await store.add_integration(ORGANIZATION, url, ["items:*"])
        return secret

    async def start(self) -> None:
        """Start both processes; return once the CDC streams and the publisher's group is stable."""
        config = self.workdir / "walhook.toml"
        config.write_text(self.config_text)
        for command in ("cdc", "publisher"):
            self.processes[command] = spawn([sys.executable, "-m", "walhook", "--log-level", "WARNING", command,
                                             "--config", str(config)], self.workdir / f"{command}.log")
        await wait_for_streaming(self.dsn, self.slot, self.processes["cdc"])
        await wait_for_publisher(self.bootstrap_servers, f"{self.topic}.publisher", self.processes["publisher"])

    def peak_rss_mb(self) -> dict[str, float]:
        """Each process's peak RSS since it started (VmHWM)."""
        return {f"{name}_peak_rss_mb": round(status_mb(process.pid), 1) for name, process in self.processes.items()}

    async def __aenter__(self) -> WalhookPipeline:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for process in self.processes.values():
            stop_process(process)


def stack_for_pipeline(stack: LocalStack) -> tuple[str, str, dict[str, int]]:
    """The stack's source DSN, a store DSN in a database of its own (created here, as in production), and the
    servers' pids for the CPU meter."""
    dsn = stack.dsn or ""
    store_dsn = dsn.rsplit("/", 1)[0] + "/walhook_store"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE walhook_store")
    servers = {"postgres": stack.postgres.process.pid}  # type: ignore[union-attr]
    if stack.kafka is not None and stack.kafka.process is not None:
        servers["kafka"] = stack.kafka.process.pid
    return dsn, store_dsn, servers


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list, rounded to 0.1 (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return round(sorted_values[rank], 1)
