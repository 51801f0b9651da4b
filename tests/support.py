"""Helpers for tests that run walhook's real processes against the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg

from walhook.demo import wait_for_publisher, wait_for_streaming
from walhook.stack import spawn, stop_process


def write_config(path: Path, dsn: str, bootstrap_servers: str, topic: str, entities: str,
                 publisher: str = "retry_delays = [0, 0.2, 0.5]") -> Path:
    """A config file for one test: its own database, topic and consumer group."""
    publisher += '\nallowed_networks = ["127.0.0.1/32"]' if "allowed_networks" not in publisher else ""
    path.write_text(f'''
[source]
dsn = "{dsn}"
status_interval = 0.2

[kafka]
bootstrap_servers = "{bootstrap_servers}"
topic = "{topic}"
consumer_group = "{topic}.publisher"
partitions = 3
linger_ms = 1

[store]
dsn = "{dsn}"
plaintext_secrets = true

[publisher]
{publisher}

{entities}
''')
    return path


def start_walhook(command: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``walhook COMMAND --config F`` as a real child process (killed if the test process dies)."""
    return spawn([sys.executable, "-m", "walhook", "--log-level", "INFO", command, "--config", str(config)], log)


@contextlib.asynccontextmanager
async def capture_and_publisher(config: Path, workdir: Path, database: str, bootstrap_servers: str,
                                topic: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """``walhook cdc`` and ``walhook publisher`` on ``config`` (logs in ``workdir``): entered once the
    capture streams and the publisher's group (``TOPIC.publisher``) consumes; both stopped on exit."""
    cdc = start_walhook("cdc", config, workdir / "cdc.log")
    publisher = start_walhook("publisher", config, workdir / "publisher.log")
    try:
        await wait_for_streaming(database, "walhook", cdc)
        await wait_for_publisher(bootstrap_servers, f"{topic}.publisher", publisher)
        yield cdc, publisher
    finally:
        stop_process(cdc)
        stop_process(publisher)


async def until_streaming(database: str, task: asyncio.Task[Any] | None = None, timeout: float = 60.0) -> None:
    """Wait until a walsender streams this database's slot: changes written before it exists are not captured.

    ``task``: the capture running in this process; if it ends first, what ended it is raised.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        while not await (await conn.execute(
                "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.database = current_database()")).fetchone():
            if task is not None and task.done():
                task.result()
                raise AssertionError("capture stopped before streaming")
            assert asyncio.get_running_loop().time() < deadline, f"capture did not start streaming within {timeout:g}s"
            await asyncio.sleep(0.05)


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


COMMENTS_ENTITY = '''
[[entities]]
table = "public.packet_comments"
entity_key = "flows/comments"
entity_path = "pipelinesPackets/{packet_id}/comments/{id}"
collection_path = "pipelinesPackets/{packet_id}/comments"
organization_column = "organization_id"
create_time_column = "created_at"
update_time_column = "updated_at"
exclude_columns = ["secret_note"]
'''

COMMENTS_TABLE = """
CREATE TABLE packet_comments (
    id serial PRIMARY KEY, organization_id text NOT NULL, packet_id int NOT NULL,
    content text NOT NULL, soft_removed boolean NOT NULL DEFAULT false, secret_note text,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())
"""
