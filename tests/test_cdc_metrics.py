"""The capture process's /metrics, and the slot-lag alarm it shares with the log."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from cdc.errors import SourceError
from cdc.metrics import parse_address, render_metrics
from cdc.pipeline import CaptureStats
from models.settings import SourceSettings
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, start_walhook
from walhook.stack import free_port, stop_process


def test_metrics_name_the_lag_alarm_and_the_heartbeat_age() -> None:
    stats = CaptureStats(events_captured=12, confirmed_lsn=0x16B3748, slot_lag_bytes=5000,
                         last_heartbeat_seen=100.0, reconnects=2)
    text = render_metrics(stats, SourceSettings(dsn="postgresql://x", max_slot_lag_bytes=4096), now=102.5)
    assert "# TYPE walhook_cdc_events_captured_total counter\nwalhook_cdc_events_captured_total 12.0\n" in text
    assert "# HELP walhook_cdc_slot_lag_bytes " in text
    assert "walhook_cdc_confirmed_lsn 2.380372e+07\n" in text  # 0x16B3748, as Prometheus writes floats
    assert "walhook_cdc_reconnects_total 2.0\n" in text
    assert "walhook_cdc_slot_lag_bytes 5000.0\n" in text
    assert "walhook_cdc_slot_lag_limit_bytes 4096.0\n" in text
    assert "walhook_cdc_slot_lag_over_limit 1.0\n" in text
    assert "walhook_cdc_heartbeat_age_seconds 2.5\n" in text


def test_no_limit_means_no_alarm_gauge_and_unknowns_are_left_out() -> None:
    text = render_metrics(CaptureStats(), SourceSettings(dsn="postgresql://x"))
    assert "over_limit" not in text and "slot_lag_bytes" not in text and "heartbeat_age" not in text


@pytest.mark.parametrize("address", ["9464", ":9464", "localhost:", "localhost:http", "localhost:70000"])
def test_a_bad_metrics_address_is_named(address: str) -> None:
    with pytest.raises(SourceError, match="metrics_address"):
        parse_address(address)


def test_an_ipv6_metrics_address_is_understood() -> None:
    assert parse_address("[::1]:9464") == ("::1", 9464)


async def test_a_running_cdc_serves_its_metrics_and_raises_the_lag_alarm(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    port = free_port()
    config = workdir / "walhook.toml"
    # A limit of 0 bytes: every heartbeat finds the slot behind its own message, so the alarm must fire.
    config.write_text(f'[source]\ndsn = "{database}"\nstatus_interval = 0.2\nheartbeat_interval = 0.3\n'
                      f'max_slot_lag_bytes = 0\nmetrics_address = "127.0.0.1:{port}"\n'
                      f'[kafka]\nbootstrap_servers = "{servers.bootstrap_servers}"\ntopic = "{topic}"\n'
                      f'{COMMENTS_ENTITY}')
    log = workdir / "cdc.log"
    cdc = start_walhook("cdc", config, log)
    try:
        metrics = await _scrape_until(port, "walhook_cdc_slot_lag_over_limit 1", cdc)
        with psycopg.connect(database, autocommit=True) as conn:
            for n in range(5):
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('acme', %s, 'hi')", [n])
        metrics = await _scrape_until(port, "walhook_cdc_events_captured_total 5", cdc)
    finally:
        stop_process(cdc)
    assert "walhook_cdc_slot_lag_limit_bytes 0" in metrics
    assert "over max_slot_lag_bytes = 0: WAL is piling up" in log.read_text()


async def _scrape_until(port: int, line: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "walhook cdc exited"
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                text = ""
            if line in text:
                return text
            await asyncio.sleep(0.2)
    raise AssertionError(f"{line!r} never showed; last scrape:\n{text}")
