"""``/healthz``, ``/readyz`` and prometheus-client's process collectors on the capture's and the publisher's
own metrics address, each on the real process."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from models.health import Check, Probe, Readiness
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, start_walhook, write_config
from walhook.stack import free_port, stop_process

COLLECTED = ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_objects_collected_total",
             "python_info")


async def test_readiness_names_each_check_and_bounds_a_probe() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    told = Check("slot", "not streaming yet")
    readiness = Readiness(told, Probe("store", hangs, timeout=0.1))
    started = time.monotonic()
    assert await readiness.report() == (False, {"slot": "failing: not streaming yet",
                                                "store": "failing: no answer within 0.1 s"})
    assert time.monotonic() - started < 1
    told.passing()
    assert await Readiness(told, Probe("store", lambda: asyncio.sleep(0))).report() == (
        True, {"slot": "ok", "store": "ok"})


async def test_capture_is_ready_once_it_streams_and_a_second_capture_waiting_for_the_slot_is_not(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    first, second = free_port(), free_port()
    first_config = _capture_config(workdir / "first.toml", database, servers, topic, first)
    second_config = _capture_config(workdir / "second.toml", database, servers, topic, second)
    active = start_walhook("cdc", first_config, workdir / "first.log")
    standby: subprocess.Popen[bytes] | None = None
    try:
        ready = await _answer_until(first, "/readyz", 200, active)
        assert ready == {"ready": True, "checks": {"slot": "ok", "kafka": "ok", "store": "ok"}}
        standby = start_walhook("cdc", second_config, workdir / "second.log")
        waiting = await _answer_until(second, "/readyz", 503, standby, lambda body: "in use" in body["checks"]["slot"])
        assert waiting["ready"] is False and waiting["checks"]["kafka"].startswith("failing: ")
        assert await _answer_until(second, "/healthz", 200, standby) == {"status": "ok"}
        metrics = await _scrape(first)
        assert all(name in metrics for name in COLLECTED), metrics
        stop_process(active)
        assert (await _answer_until(second, "/readyz", 200, standby))["checks"]["slot"] == "ok"
    finally:
        stop_process(active)
        if standby is not None:
            stop_process(standby)


async def test_publisher_is_ready_once_its_group_is_joined_and_not_while_the_store_is_unreachable(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    port = free_port()
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY,
                          publisher=f'metrics_address = "127.0.0.1:{port}"')
    publisher = start_walhook("publisher", config, workdir / "publisher.log")
    try:
        assert await _answer_until(port, "/readyz", 200, publisher) == {
            "ready": True, "checks": {"consumer": "ok", "store": "ok"}}
        metrics = await _scrape(port)
        assert all(name in metrics for name in COLLECTED), metrics
        _allow_connections(servers, database, False)
        down = await _answer_until(port, "/readyz", 503, publisher)
        assert down["checks"]["consumer"] == "ok" and down["checks"]["store"].startswith("failing: "), down
        _allow_connections(servers, database, True)
        await _answer_until(port, "/readyz", 200, publisher)
    finally:
        _allow_connections(servers, database, True)
        stop_process(publisher)


def _capture_config(path: Path, database: str, servers: Servers, topic: str, port: int) -> Path:
    path.write_text(f'[source]\ndsn = "{database}"\nstatus_interval = 0.2\nslot_busy_timeout = 120\n'
                    f'metrics_address = "127.0.0.1:{port}"\n'
                    f'[kafka]\nbootstrap_servers = "{servers.bootstrap_servers}"\ntopic = "{topic}"\n'
                    f'[store]\ndsn = "{database}"\nplaintext_secrets = true\n{COMMENTS_ENTITY}')
    return path


def _allow_connections(servers: Servers, database: str, allowed: bool) -> None:
    """Make the store unreachable (its connections ended, new ones refused), or reachable again."""
    name = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(str(name)), sql.SQL("true" if allowed else "false")))
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])


async def _answer_until(port: int, path: str, status: int, process: subprocess.Popen[bytes],
                        also: Any = lambda body: True, timeout: float = 60.0) -> Any:
    """The JSON body of ``path`` once it answers ``status`` (and ``also(body)`` holds)."""
    deadline, last = time.monotonic() + timeout, ""
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the process exited"
            try:
                response = await client.get(f"http://127.0.0.1:{port}{path}", timeout=5)
                last = f"{response.status_code} {response.text}"
                if response.status_code == status and also(response.json()):
                    return response.json()
            except httpx.TransportError as exc:
                last = repr(exc)
            await asyncio.sleep(0.2)
    raise AssertionError(f"{path} never answered {status}; last: {last}")


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/metrics")).text
