"""Two ``walhook cdc`` processes on one slot, as real processes: the second never corrupts the stream.

Postgres lets one walsender stream a slot at a time. A second process with a short
``slot_busy_timeout`` exits non-zero with one line naming the slot and its holder; one with a long
timeout waits, and takes over once the first is killed, losing nothing.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import psycopg

from tests.conftest import Servers
from tests.support import start_walhook, write_config
from tests.test_capture import read_topic
from walhook.demo import wait_for_streaming
from walhook.stack import stop_process

ENTITY = '''
[[entities]]
table = "public.items"
entity_key = "items"
entity_path = "items/{id}"
collection_path = "items"
organization_column = "org"
'''


def config(workdir: Path, name: str, database: str, servers: Servers, topic: str, busy_timeout: float) -> Path:
    path = write_config(workdir / f"{name}.toml", database, servers.bootstrap_servers, topic, ENTITY)
    path.write_text(path.read_text().replace("status_interval = 0.2", f"status_interval = 0.2\n"
                                             f"slot_busy_timeout = {busy_timeout}"))
    return path


def insert(database: str, ids: range) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        for item in ids:
            conn.execute("INSERT INTO items VALUES (%s, 'acme')", [item])


async def slot_holder(database: str) -> int | None:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walhook'"
                                        )).fetchone()
    return row[0] if row else None


async def wait_for_new_holder(database: str, old: int | None, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = await slot_holder(database)
        if holder is not None and holder != old:
            return holder
        await asyncio.sleep(0.1)
    raise AssertionError("no process took the slot over")


async def test_a_second_cdc_on_the_same_slot_exits_or_waits_and_takes_over(
        database: str, servers: Servers, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, org text)")
    first = start_walhook("cdc", config(workdir, "first", database, servers, topic, 30), workdir / "first.log")
    waiting = None
    try:
        await wait_for_streaming(database, "walhook", first, timeout=30)
        holder = await slot_holder(database)
        insert(database, range(0, 5))

        impatient = start_walhook("cdc", config(workdir, "impatient", database, servers, topic, 1),
                                  workdir / "impatient.log")
        assert await asyncio.to_thread(impatient.wait, 30) == 1
        last_line = (workdir / "impatient.log").read_text().strip().splitlines()[-1]
        assert re.fullmatch(rf"walhook: error: replication slot 'walhook' is in use by process {holder} "
                            r"\(walhook-cdc from [\d.]+, streaming since [\dT:Z-]+\); stop the other consumer .*",
                            last_line), last_line
        assert await slot_holder(database) == holder and first.poll() is None  # the first one never noticed
        insert(database, range(5, 10))

        waiting = start_walhook("cdc", config(workdir, "waiting", database, servers, topic, 60),
                                workdir / "waiting.log")
        for _ in range(300):  # until it has found the slot busy at least once (starting takes a while under load)
            if "waiting for it to be released" in (workdir / "waiting.log").read_text() or waiting.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert waiting.poll() is None and "waiting for it to be released" in (workdir / "waiting.log").read_text()
        first.send_signal(signal.SIGKILL)
        await wait_for_new_holder(database, holder)
        insert(database, range(10, 15))
        events = await read_topic(servers.bootstrap_servers, topic, expected=15)
    finally:
        for process in (first, waiting):
            if process is not None:
                stop_process(process)
    assert {int(event["entityId"]) for event in events} == set(range(15))  # re-reads may repeat, nothing is lost
