"""``--log-format json``: every line the real processes write is one JSON object, and a delivery's line
names its organization, integration, delivery and event."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, wait_for, write_config
from walhook.cli import main
from walhook.demo import wait_for_publisher, wait_for_streaming
from walhook.stack import spawn, stop_process


async def test_capture_and_publisher_write_json_lines_with_the_ids_at_hand(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY)
    # The first attempt fails, so the publisher logs it; the retry succeeds.
    async with ScriptedReceiver(scripts={"acme": lambda path, count: Answer(500 if count == 0 else 204)}
                                ) as receiver, Store(database) as store:
        receiver.secrets["acme"] = await store.add_organization("acme")
        integration = await store.add_integration("acme", receiver.url("acme"), ["flows/comments:*"])
        with _json_process("cdc", config, workdir) as cdc, _json_process("publisher", config, workdir) as publisher:
            await wait_for_streaming(database, "walhook", cdc)
            await wait_for_publisher(servers.bootstrap_servers, f"{topic}.publisher", publisher)
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('acme', 1, 'hi')")
            await wait_for(lambda: len(receiver.verified("acme")) == 2, what="the retry to succeed")
    capture, delivery = _lines(workdir / "cdc.log"), _lines(workdir / "publisher.log")
    hit = receiver.verified("acme")[0]
    assert hit.event is not None
    failed = next(line for line in delivery if line["message"].startswith("attempt of"))
    assert failed["level"] == "WARNING" and failed["logger"] == "walhook.publisher"
    assert {key: failed[key] for key in ("organization", "integration", "delivery", "event")} == {
        "organization": "acme", "integration": integration, "delivery": hit.webhook_id,
        "event": hit.event["eventId"]}
    ready = next(line for line in capture if line["message"].startswith("ready: streaming"))
    assert ready["lsn"].count("/") == 1, ready


def test_a_bad_log_format_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--log-format", "xml", "status"])
    assert "--log-format: invalid choice: 'xml'" in capsys.readouterr().err


def test_the_human_format_is_unchanged_and_leaves_the_ids_out() -> None:
    script = ("import logging; from models.logs import configure_logging, ids; configure_logging('INFO'); "
              "logging.getLogger('walhook.publisher').warning('attempt failed', extra=ids('acme', 7, 'e_i7', 'e'))")
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING walhook.publisher: attempt failed\n", err), err


@contextlib.contextmanager
def _json_process(command: str, config: Path, workdir: Path) -> Any:
    process = spawn([sys.executable, "-m", "walhook", "--log-format", "json", command, "--config", str(config)],
                    workdir / f"{command}.log")
    try:
        yield process
    finally:
        stop_process(process)


def _lines(log: Path) -> list[dict[str, Any]]:
    """Every line of ``log`` as JSON (a line that is not fails the test), each with the four fields."""
    lines = [orjson.loads(line) for line in log.read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines), lines
    return lines
