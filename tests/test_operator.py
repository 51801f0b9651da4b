"""Operator experience on the real stack: ``walhook init`` from a database's catalog, config discovery,
global options anywhere, one-line configuration errors, and the publisher's own /metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from models.errors import ConfigError
from publisher.store import Store
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, capture_and_publisher, write_config
from walhook.config import find_config, load_settings
from walhook.receiver import VerifyingReceiver
from walhook.stack import free_port

TABLES = """
CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, total numeric,
                     created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz);
CREATE TABLE order_items (org_id text NOT NULL, order_id bigint NOT NULL, line int NOT NULL, sku text,
                          PRIMARY KEY (org_id, order_id, line));
CREATE TABLE audit (happened text, note text);
CREATE TABLE tagged (code text NOT NULL, label text);
CREATE UNIQUE INDEX tagged_code ON tagged (code);
ALTER TABLE tagged REPLICA IDENTITY USING INDEX tagged_code;
CREATE SCHEMA sales;
CREATE TABLE sales."odd.name" (id int PRIMARY KEY);
"""


def walhook(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "walhook", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env, input=stdin)


def test_init_writes_a_starter_config_from_the_catalog(database: str, tmp_path: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(TABLES)
    listed = walhook("init", "--dsn", database, "--list")
    assert listed.returncode == 0, listed.stderr
    assert "public.audit" in listed.stdout and "no primary key and no replica identity index" in listed.stdout
    assert "sales.odd.name" in listed.stdout and "holds a quote or a dot" in listed.stdout
    refused = walhook("init", "--dsn", database, "--table", "missing", "--output", str(tmp_path / "x.toml"))
    assert refused.returncode == 1 and "table 'missing' not found (the database has: public.audit," in refused.stderr
    out = tmp_path / "walhook.toml"
    done = walhook("init", "--dsn", database, "--all", "--output", str(out), "--admin-token", "t" * 24,
                   "--allow-network", "127.0.0.1/32")
    assert done.returncode == 0, done.stderr
    assert "skipping public.audit: no primary key and no replica identity index" in done.stderr
    settings = load_settings(out)  # the file loads as it is: its commented defaults are valid TOML comments
    by_table = {e.table: e for e in settings.entities}
    assert set(by_table) == {"public.orders", "public.order_items", "public.tagged"}
    orders = by_table["public.orders"]
    assert (orders.entity_key, orders.entity_path, orders.collection_path) == ("orders", "orders/{id}", "orders")
    assert (orders.organization_column, orders.create_time_column, orders.update_time_column) == \
        ("tenant_id", "created_at", "updated_at")
    items = by_table["public.order_items"]  # the organization column is not part of the path
    assert (items.entity_path, items.organization_column) == ("order_items/{order_id}/{line}", "org_id")
    assert by_table["public.tagged"].entity_path == "tagged/{code}"  # the replica identity index names rows
    assert settings.api.admin_token == "t" * 24 and settings.publisher.allowed_networks == ["127.0.0.1/32"]
    assert settings.store is not None and [key.split(":")[0] for key in settings.store.secret_keys] == ["k1"]
    text = out.read_text()
    assert "# retry_delays = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]" in text
    assert "# days = 7  # days a succeeded delivery and its attempts are kept" in text
    again = walhook("init", "--dsn", database, "--all", "--output", str(out))
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    unattended = walhook("init", "--dsn", database, "--output", str(tmp_path / "y.toml"), stdin="")
    assert unattended.returncode == 1 and "--table T (repeatable) or --all" in unattended.stderr


def test_config_is_found_where_the_error_says_it_looks(tmp_path: Path) -> None:
    assert find_config(None, {}, tmp_path) == (None, "no configuration file (looked for --config, $WALHOOK_CONFIG "
                                               "and ./walhook.toml; write one with `walhook init`)")
    (tmp_path / "walhook.toml").write_text("")
    assert find_config(None, {}, tmp_path) == (tmp_path / "walhook.toml", "./walhook.toml")
    assert find_config(None, {"WALHOOK_CONFIG": str(tmp_path / "walhook.toml")}, Path("/")) == \
        (tmp_path / "walhook.toml", str(tmp_path / "walhook.toml"))
    with pytest.raises(ConfigError, match=r"\$WALHOOK_CONFIG names .*nope.toml: file not found"):
        find_config(None, {"WALHOOK_CONFIG": str(tmp_path / "nope.toml")}, tmp_path)


def test_commands_find_the_config_and_take_global_options_anywhere(database: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    nowhere = walhook("deliveries", "list", cwd=tmp_path, env=env)
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip() == ("walhook: error: no configuration file (looked for --config, $WALHOOK_CONFIG "
                                      "and ./walhook.toml; write one with `walhook init`): missing section(s): "
                                      "[store]")
    (tmp_path / "walhook.toml").write_text(f'[store]\ndsn = "{database}"\nplaintext_secrets = true\n')
    for args in (["deliveries", "list", "--json", "--log-level", "WARNING"],
                 ["--log-level", "WARNING", "deliveries", "list", "--json"],
                 ["deliveries", "--log-level", "WARNING", "list", "--json"]):
        found = walhook(*args, cwd=tmp_path, env=env)
        assert (found.returncode, found.stdout.strip(), found.stderr) == (0, "[]", ""), args


def test_a_bad_allowed_networks_entry_is_one_line_for_every_process(tmp_path: Path) -> None:
    config = tmp_path / "walhook.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:9"\n[store]\ndsn = "postgresql://x@127.0.0.1:9/x"\n'
                      '[publisher]\nallowed_networks = ["127.0.0.1/8"]\n')
    for command in ("publisher", "api", "integrations"):
        args = [command, "--config", str(config)] + (["list"] if command == "integrations" else [])
        done = walhook(*args)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip() == (f"walhook: error: {config}: publisher.allowed_networks: '127.0.0.1/8' is not "
                                       "an IP address or network (e.g. 10.20.0.0/16): 127.0.0.1/8 has host bits set")


async def test_the_publisher_serves_its_own_metrics(servers: Servers, database: str, topic: str,
                                                    workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    port = free_port()
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY,
                          publisher=f'retry_delays = [0, 0.2]\nmetrics_address = "127.0.0.1:{port}"')
    async with VerifyingReceiver() as receiver, Store(database) as store:
        receiver.secrets["acme"] = await store.add_organization("acme")
        integration = await store.add_integration("acme", receiver.url_for("acme"), ["flows/comments:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            with psycopg.connect(database, autocommit=True) as conn:
                for n in range(3):
                    conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                                 "VALUES ('acme', %s, 'hi')", [n])
            metrics = await _scrape_until(port, 'walhook_publisher_attempts_total{outcome="succeeded"} 3.0')
    assert "# TYPE walhook_publisher_attempt_duration_seconds histogram" in metrics
    assert 'walhook_publisher_attempt_duration_seconds_bucket{le="+Inf"} 3.0' in metrics
    assert "walhook_publisher_deliveries_recorded_total 3.0" in metrics
    assert "# TYPE walhook_publisher_consumer_lag gauge" in metrics
    assert "# TYPE walhook_publisher_routing_waiting gauge" in metrics  # (nothing waits: no sample)
    assert f'walhook_publisher_lane_depth{{integration="{integration}"}} 0.0' in metrics
    assert 'walhook_delivery_log_bytes{table="attempts"}' in metrics  # the pruning loop's first round
    assert f"ready: consuming topic {topic}" in (workdir / "publisher.log").read_text()
    assert f"metrics on http://127.0.0.1:{port}/metrics" in (workdir / "publisher.log").read_text()


async def _scrape_until(port: int, line: str, timeout: float = 30.0) -> str:
    deadline, text = time.monotonic() + timeout, ""
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.HTTPError:
                text = ""
            if line in text:
                return text
            await asyncio.sleep(0.2)
    raise AssertionError(f"{line!r} not in the publisher's metrics:\n{text}")


async def test_recover_waits_until_the_failed_deliveries_have_settled(servers: Servers, database: str, topic: str,
                                                                      workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    port = free_port()  # nothing listens there yet: every first attempt fails, and one attempt is all there is
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY,
                          publisher="retry_delays = [0]")
    async with Store(database) as store:
        secret = await store.add_organization("acme")
        integration = await store.add_integration("acme", f"http://127.0.0.1:{port}/hooks/acme", ["flows/comments:*"])
    async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        with psycopg.connect(database, autocommit=True) as conn:
            for n in range(3):
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('acme', %s, 'hi')", [n])
        async with Store(database) as store:
            deadline = time.monotonic() + 30
            while len(await store.deliveries(integration, "failed")) < 3:
                assert time.monotonic() < deadline, "the deliveries did not fail"
                await asyncio.sleep(0.2)
        async with VerifyingReceiver({"acme": secret}, port=port) as receiver:
            recovered = await asyncio.to_thread(walhook, "recover", "--config", str(config), "--integration",
                                                str(integration), "--since", since, "--wait")
            assert recovered.returncode == 0, recovered.stderr
            assert len(receiver.received) == 3  # settled means delivered here
    assert "3 failed deliveries scheduled again" in recovered.stdout
    assert recovered.stderr.strip().splitlines()[-1] == "recover: 3 of 3 deliveries settled"  # plain lines: no tty
