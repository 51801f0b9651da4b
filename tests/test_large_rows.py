"""Large rows with the default settings, on the real stack: they flow, or they are set aside visibly.

An update of a row with a 700 KB text column under REPLICA IDENTITY FULL is an event of about
1.4 MB (the new row and the old one). The defaults carry it end to end; an event over the
producer's limit goes to the capture dead-letter topic (counted, logged, listed by
``walhook dead-letters list``) and the stream goes on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import psycopg

from publisher.store import Store
from tests.conftest import Servers
from tests.support import capture_and_publisher, start_walhook, wait_for
from tests.test_capture import read_topic
from tests.test_cdc_metrics import _scrape_until
from walhook.demo import wait_for_streaming
from walhook.receiver import VerifyingReceiver
from walhook.stack import free_port, stop_process

DOCS_TABLE = "CREATE TABLE docs (id int PRIMARY KEY, org text NOT NULL, body text NOT NULL)"
DOCS_ENTITY = '''
[[entities]]
table = "public.docs"
entity_key = "docs"
entity_path = "docs/{id}"
collection_path = "docs"
organization_column = "org"
'''
ROW = 700_000
OVER_THE_LIMIT = 9_000_000  # the default max_request_size is 8 MiB


def default_config(path: Path, database: str, servers: Servers, topic: str, metrics_port: int) -> Path:
    """Nothing about sizes or dead letters: the defaults are what is tested."""
    path.write_text(f'[source]\ndsn = "{database}"\nstatus_interval = 0.2\n'
                    f'metrics_address = "127.0.0.1:{metrics_port}"\n'
                    f'[kafka]\nbootstrap_servers = "{servers.bootstrap_servers}"\ntopic = "{topic}"\n'
                    f'consumer_group = "{topic}.publisher"\nlinger_ms = 1\n'
                    f'[store]\ndsn = "{database}"\nplaintext_secrets = true\n'
                    f'[publisher]\nretry_delays = [0, 0.2, 0.5]\nallowed_networks = ["127.0.0.1/32"]\n{DOCS_ENTITY}')
    return path


def execute(database: str, *statements: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


async def test_a_700_kb_row_updated_with_full_identity_is_delivered_with_the_defaults(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    execute(database, DOCS_TABLE)
    config = default_config(workdir / "walhook.toml", database, servers, topic, free_port())
    async with VerifyingReceiver() as receiver, Store(database) as store:
        receiver.secrets["acme"] = await store.add_organization("acme")
        await store.add_integration("acme", receiver.url_for("acme"), ["docs:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic) as (cdc, _):
            execute(database, f"INSERT INTO docs VALUES (1, 'acme', repeat('a', {ROW}))",
                    f"UPDATE docs SET body = repeat('b', {ROW}) WHERE id = 1",
                    "INSERT INTO docs VALUES (2, 'acme', 'after')")
            await wait_for(lambda: len(receiver.received) >= 3 or cdc.poll() is not None, timeout=60,
                           what="three webhooks")
            assert cdc.poll() is None, "walhook cdc exited:\n" + (workdir / "cdc.log").read_text()[-2000:]
    assert receiver.rejected == []
    # Order holds per entity; docs/2 lives in another partition and may arrive before docs/1's changes.
    (after,) = [hook for hook in receiver.received if hook.event["entityPath"] == "docs/2"]
    created, updated = [hook for hook in receiver.received if hook.event["entityPath"] == "docs/1"]
    assert (created.event["operationType"], updated.event["operationType"], after.event["operationType"]) == (
        "created", "updated", "created")
    assert updated.event["data"]["value"]["properties"]["body"] == "b" * ROW
    assert updated.event["data"]["oldValue"]["properties"]["body"] == "a" * ROW
    assert len(updated.body) > 2 * ROW > 1 << 20  # more than the old default limit of 1 MiB


async def test_an_event_over_the_limit_is_dead_lettered_counted_listed_and_the_stream_goes_on(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    execute(database, DOCS_TABLE)
    port = free_port()
    config = default_config(workdir / "walhook.toml", database, servers, topic, port)
    log = workdir / "cdc.log"
    cdc = start_walhook("cdc", config, log)
    try:
        await wait_for_streaming(database, "walhook", cdc)
        execute(database, f"INSERT INTO docs VALUES (1, 'acme', repeat('x', {OVER_THE_LIMIT}))",
                "INSERT INTO docs VALUES (2, 'acme', 'after')")
        metrics = await _scrape_until(port, "walhook_cdc_events_dead_lettered_total 1.0\n", cdc)
        events = await read_topic(servers.bootstrap_servers, topic, expected=1)
        assert cdc.poll() is None
    finally:
        stop_process(cdc)
    assert [event["entityPath"] for event in events] == ["docs/2"]  # the later change arrived
    assert "walhook_cdc_events_captured_total 2.0\n" in metrics
    (listed,) = orjson.loads(dead_letters_list(config, "--json"))
    assert (listed["source"], listed["table"], listed["entity_path"]) == ("capture", "public.docs", "docs/1")
    assert listed["size"] > OVER_THE_LIMIT and "MessageSizeTooLarge" in listed["reason"]
    assert listed["event_id"].startswith("evt_") and listed["topic"] == f"{topic}.capture-dead-letter"
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and listed["event_id"] in errors[0] and "public.docs" in errors[0], errors


def dead_letters_list(config: Path, *options: str) -> str:
    done = subprocess.run([sys.executable, "-m", "walhook", "dead-letters", "list", "--config", str(config), *options],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_listing_shows_both_halves_dead_letters_as_a_table(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    from aiokafka import AIOKafkaProducer

    config = default_config(workdir / "walhook.toml", database, servers, topic, free_port())
    producer = AIOKafkaProducer(bootstrap_servers=servers.bootstrap_servers)
    await producer.start()
    try:
        capture = {"eventId": "evt_00000000016F7C68_000002", "entityKey": "docs", "entityPath": "docs/7",
                   "table": "public.docs", "reason": "MessageSizeTooLargeError: too big", "size": 9000123}
        await producer.send_and_wait(f"{topic}.capture-dead-letter", orjson.dumps(capture))
        await producer.send_and_wait(f"{topic}.dead-letter", b"not json", headers=[
            ("walhook-dead-letter-reason", b"not JSON: unexpected character")])
    finally:
        await producer.stop()
    lines = dead_letters_list(config).splitlines()
    assert lines[0].split()[:3] == ["TIME", "SOURCE", "SIZE"] and len(lines) == 3
    capture_line = next(line for line in lines if " capture " in line)
    publisher_line = next(line for line in lines if " publisher " in line)
    for part in ("9000123", "evt_00000000016F7C68_000002", "public.docs", "docs/7", "MessageSizeTooLargeError"):
        assert part in capture_line
    assert publisher_line.rstrip().endswith("not JSON: unexpected character") and " 8 " in publisher_line
