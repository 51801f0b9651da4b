"""Failover slots and the rule that a vanished slot is never recreated silently, on the real stack.

The pure verdicts (``judge``, ``judge_standby``, ``readiness_line``, the DSN helpers) are checked
directly; the start-up refusals run the capture against a real Postgres, with the position memory in
the test's own database (the store).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from cdc.errors import SlotLost
from cdc.failover import hosts_of, judge_standby, primary_dsn, readiness_line, standby_targets
from cdc.lsn import format_lsn, parse_lsn
from cdc.memory import ServerIdentity, SlotKeeper, StorePositions, StreamPosition, judge
from cdc.pipeline import CaptureStats, run_capture
from models.settings import SourceSettings
from tests.conftest import Servers
from tests.test_capture import read_topic
from tests.test_cdc_features import DOCS, DOCS_TABLE, setup, source_and_kafka

SERVER = ServerIdentity("7441000000000000001", 1, "app", 180006)
REMEMBERED = StreamPosition("app", "walhook", "7441000000000000001", 1, parse_lsn("0/16F7C68"))


def test_judge_lets_a_first_start_and_a_present_slot_through() -> None:
    assert judge(None, SERVER, slot_exists=False) is None
    assert judge(REMEMBERED, SERVER, slot_exists=True) is None
    promoted = ServerIdentity(SERVER.system_identifier, 2, "app", 180006)  # same cluster, new timeline
    assert judge(REMEMBERED, promoted, slot_exists=True) is None


def test_judge_names_what_a_new_slot_would_lose() -> None:
    missing = judge(REMEMBERED, ServerIdentity(SERVER.system_identifier, 2, "app", 180006), slot_exists=False)
    assert missing is not None
    assert "slot 'walhook' is missing" in missing and "changes committed after 0/16F7C68" in missing
    other = judge(REMEMBERED, ServerIdentity("7441999999999999999", 1, "app", 180006), slot_exists=True)
    assert other is not None and "another cluster" in other and "after 0/16F7C68" in other


def test_judge_standby_tells_each_unready_state_apart() -> None:
    assert judge_standby("h:1", (True, False, None, True)).ready
    assert "not on this standby" in judge_standby("h:1", None).reason
    assert "temporary" in judge_standby("h:1", (True, True, None, True)).reason
    assert "invalidated (wal_removed)" in judge_standby("h:1", (True, False, "wal_removed", True)).reason
    assert "not a synced failover slot" in judge_standby("h:1", (False, False, None, False)).reason


def test_readiness_line() -> None:
    ready, waiting = judge_standby("a:1", (True, False, None, True)), judge_standby("b:2", None)
    assert readiness_line(True, []) == "not configured"
    assert readiness_line(True, [ready]) == "ok"
    assert readiness_line(True, [ready, waiting]).startswith("not ready: b:2: the slot is not on this standby")
    assert "not a failover slot" in readiness_line(False, [ready])


def test_multi_host_dsns_find_the_primary_and_list_the_standbys() -> None:
    dsn = "postgresql://postgres@10.0.0.1:5432,10.0.0.2:5433/app"
    assert "target_session_attrs=primary" in primary_dsn(dsn)
    assert primary_dsn("host=a port=1 dbname=x") == "host=a port=1 dbname=x"  # one host: as given
    assert "target_session_attrs=any" in primary_dsn(dsn + "?target_session_attrs=any")
    assert [("host=10.0.0.1" in h and "port=5432" in h, "host=10.0.0.2" in h and "port=5433" in h)
            for h in hosts_of(dsn)] == [(True, False), (False, True)]
    source = SourceSettings(dsn=dsn, standby_dsns=["host=10.0.0.3"])
    assert len(standby_targets(source)) == 3
    assert standby_targets(SourceSettings(dsn="host=a")) == []


async def _slot(database: str) -> tuple[str, bool] | None:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute("SELECT confirmed_flush_lsn::text, failover FROM pg_replication_slots "
                                        "WHERE slot_name = 'walhook'")).fetchone()
    return None if row is None else (row[0], row[1])


async def _stream_once(database: str, source: SourceSettings, servers: Servers, topic: str,
                       keeper: SlotKeeper, row: int = 1) -> None:
    """Capture until the inserted row is on the topic and the slot confirmed it, then stop cleanly."""
    _, kafka = source_and_kafka(database, servers, topic)
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(source, kafka, [DOCS], stop, stats=CaptureStats(), keeper=keeper))
    try:
        await _wait_for_slot_activity(database, task)
        setup(database, f"INSERT INTO docs (id, org, title) VALUES ({row}, 'acme', 'first')")
        assert len(await read_topic(servers.bootstrap_servers, topic, 1)) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _wait_for_slot_activity(database: str, task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 30
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute("SELECT active FROM pg_replication_slots")).fetchone()
            if row and row[0]:
                return
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
    raise AssertionError("capture did not start streaming")


async def test_a_vanished_slot_is_refused_then_accepted_once(database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE)
    source, _ = source_and_kafka(database, servers, topic)
    await _stream_once(database, source, servers, topic, SlotKeeper(StorePositions(database)))
    slot = await _slot(database)
    assert slot is not None and slot[1] is True  # Postgres 18: created as a failover slot
    async with StorePositions(database) as memory:
        remembered = await memory.recall(_name(database), "walhook")
    assert remembered is not None and format_lsn(remembered.confirmed_lsn) == slot[0]
    setup(database, "SELECT pg_drop_replication_slot('walhook')",
          "INSERT INTO docs (id, org, title) VALUES (2, 'acme', 'committed while no slot existed')")
    _, kafka = source_and_kafka(database, servers, topic)
    with pytest.raises(SlotLost, match=rf"missing.*changes committed after {slot[0]} would never be captured.*"
                                       r"walhook cdc --accept-lost-changes.*backfill"):
        await run_capture(source, kafka, [DOCS], asyncio.Event(), keeper=SlotKeeper(StorePositions(database)))
    assert await _slot(database) is None  # nothing was created
    await _stream_once(database, source, servers, f"{topic}.after", SlotKeeper(StorePositions(database), True), 3)
    assert await _slot(database) is not None


async def test_another_cluster_is_refused(database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE)
    name = _name(database)
    async with StorePositions(database) as memory:
        await memory.remember(StreamPosition(name, "walhook", "1234", 1, parse_lsn("0/1000")))
    source, kafka = source_and_kafka(database, servers, topic)
    with pytest.raises(SlotLost, match=r"another cluster \(system identifier \d+\) than the one walhook streamed "
                                       r"slot 'walhook' from \(system identifier 1234"):
        await run_capture(source, kafka, [DOCS], asyncio.Event(), keeper=SlotKeeper(StorePositions(database)))


async def test_an_existing_slot_becomes_a_failover_slot(database: str, servers: Servers, topic: str) -> None:
    setup(database, DOCS_TABLE, "SELECT pg_create_logical_replication_slot('walhook', 'pgoutput')")
    assert (await _slot(database) or ("", True))[1] is False
    source, _ = source_and_kafka(database, servers, topic)
    await _stream_once(database, source, servers, topic, SlotKeeper(StorePositions(database)))
    assert (await _slot(database) or ("", False))[1] is True


async def test_the_cli_refuses_in_one_line(database: str, servers: Servers, topic: str, workdir: Path) -> None:
    from tests.support import write_config

    setup(database, DOCS_TABLE)
    name = _name(database)
    async with StorePositions(database) as memory:  # walhook streamed here before; the slot is gone
        await memory.remember(StreamPosition(name, "walhook", await _system_identifier(database), 1,
                                             parse_lsn("0/2000")))
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, _docs_entity())
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "walhook", "cdc", "--config", str(config)],
                                   capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if line.startswith("walhook: error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "changes committed after 0/2000" in errors[0] and "--accept-lost-changes" in errors[0]
    assert "Traceback" not in done.stderr


def _name(database: str) -> str:
    return str(conninfo_to_dict(database)["dbname"])


async def _system_identifier(database: str) -> str:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        row = await (await conn.execute("SELECT system_identifier::text FROM pg_control_system()")).fetchone()
    assert row is not None
    return str(row[0])


def _docs_entity() -> str:
    return ('[[entities]]\ntable = "public.docs"\nentity_key = "docs"\nentity_path = "docs/{id}"\n'
            'collection_path = "docs"\norganization_column = "org"\n')


def test_the_capture_metrics_say_whether_each_standby_could_take_over() -> None:
    from cdc.metrics import render_metrics

    stats = CaptureStats(failover_slot=True, standbys=[judge_standby("10.0.0.2:5432", (True, False, None, True)),
                                                       judge_standby("10.0.0.3:5432", (True, True, None, True))])
    text = render_metrics(stats, SourceSettings(dsn="host=a"), now=0.0)
    assert "walhook_cdc_slot_failover 1" in text
    assert 'walhook_cdc_standby_failover_ready{standby="10.0.0.2:5432"} 1' in text
    assert 'walhook_cdc_standby_failover_ready{standby="10.0.0.3:5432"} 0' in text
    assert "standby_failover_ready" not in render_metrics(CaptureStats(), SourceSettings(dsn="host=a"), now=0.0)
