"""The operator CLI against a real store: clear one-line errors, tables or --json."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from publisher.store import Store
from tests.support import start_walhook
from walhook.stack import free_port, stop_process, wait_for_port

GROUPS = {"orgs", "integrations", "deliveries", "keys", "backfill"}  # commands with an action word after them


def walhook(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``walhook COMMAND [ACTION] --config F ARGS...`` as an operator would."""
    words = 2 if args[0] in GROUPS else 1
    command = [sys.executable, "-m", "walhook", "--log-level", "WARNING", *args[:words], "--config", str(config),
               *args[words:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def config_file(tmp_path: Path, dsn: str, allowed: str = '["127.0.0.1/32"]') -> Path:
    path = tmp_path / "walhook.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:9"\n[store]\ndsn = "{dsn}"\nplaintext_secrets = true\n'
                    f"[publisher]\nallowed_networks = {allowed}\n")
    return path


async def test_integrations_are_created_listed_and_private_urls_refused(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    refused = walhook(config, "integrations", "add", "--org", "acme", "--url", "http://10.1.2.3/hook",
                      "--events", "docs:*")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == ("walhook: error: http://10.1.2.3/hook: destination not "
                                                       "allowed (private address)")
    assert "10.1.2.3 is a private address (10.0.0.0/8); add it to [publisher] allowed_networks" in refused.stderr
    created = walhook(config, "integrations", "add", "--org", "acme", "--url", "http://127.0.0.1:9/hook",
                      "--events", "docs:created,updated", "--json")
    assert created.returncode == 0, created.stderr
    assert "signing secret (store it now): whsec_" in created.stderr
    listed = walhook(config, "integrations", "list", "--json")
    (item,) = orjson.loads(listed.stdout)
    assert item["url"] == "http://127.0.0.1:9/hook" and item["events"] == ["docs:created,updated"]
    assert "secret" not in listed.stdout  # secrets never appear in listings


async def test_rotation_keeps_two_secrets_during_the_overlap(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    assert walhook(config, "orgs", "add", "acme").returncode == 0
    rotated = walhook(config, "orgs", "rotate-secret", "acme", "--overlap-hours", "1", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = orjson.loads(rotated.stdout)["secret"]
    async with Store(database) as store:
        integration = await store.add_integration("acme", "http://127.0.0.1:9/x", ["*"])
        secrets = (await store.integration(integration)).secrets
    assert len(secrets) == 2 and secrets[0] == new_secret


async def test_errors_are_one_line_and_exit_non_zero(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    missing = walhook(config, "redeliver", "999")
    assert missing.returncode == 1 and missing.stderr.strip() == "walhook: error: delivery 999 does not exist"
    assert walhook(config, "deliveries", "list", "--json").stdout.strip() == "[]"
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\nbootstrap_server = "x"\n')
    broken = walhook(bad, "deliveries", "list")
    assert broken.returncode == 1 and "kafka.bootstrap_server: unknown key" in broken.stderr


async def test_keys_and_integration_states(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    assert walhook(config, "orgs", "add", "acme").returncode == 0
    key = orjson.loads(walhook(config, "keys", "add", "--org", "acme", "--name", "crm", "--json").stdout)
    assert key["key"].startswith("whk_")
    listed = walhook(config, "keys", "list", "--org", "acme")
    assert "crm" in listed.stdout and key["key"] not in listed.stdout
    assert walhook(config, "keys", "revoke", "--org", "acme", str(key["id"])).returncode == 0
    async with Store(database) as store:
        assert await store.organization_of_key(key["key"]) is None
        integration = await store.add_integration("acme", "http://127.0.0.1:9/x", ["*"])
    assert walhook(config, "integrations", "disable", str(integration)).returncode == 0
    async with Store(database) as store:
        assert not (await store.integration(integration)).enabled
    assert walhook(config, "integrations", "delete", str(integration)).returncode == 0
    assert orjson.loads(walhook(config, "orgs", "list", "--json").stdout)[0]["id"] == "acme"
    assert walhook(config, "orgs", "delete", "acme").returncode == 0
    assert orjson.loads(walhook(config, "orgs", "list", "--json").stdout) == []


async def test_cli_errors_are_one_line_naming_what_was_wrong(database: str, tmp_path: Path) -> None:
    """Three of the control-plane review's CLI findings: an unknown delivery printed nothing and exited 0,
    ``--api`` with a key silently read the local store (every organization's integrations), and an
    unreachable store printed SQLAlchemy's "Background on this error" link."""
    config = config_file(tmp_path, database)
    unknown = walhook(config, "deliveries", "show", "99999")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "walhook: error: delivery 99999 does not exist"
    remote = subprocess.run([sys.executable, "-m", "walhook", "--api", "http://127.0.0.1:9", "--token", "whk_x",
                             "integrations", "list", "--config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert remote.returncode == 1 and remote.stdout == ""
    assert "does not work through --api" in remote.stderr and len(remote.stderr.strip().splitlines()) == 1
    down = tmp_path / "down.toml"
    down.write_text(config.read_text().replace(database, "postgresql://postgres@127.0.0.1:9/nothing"))
    failed = walhook(down, "integrations", "list")
    assert failed.returncode == 1 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "Background on this error" not in failed.stderr and "cannot prepare the store schema" in failed.stderr


async def test_a_piped_replay_wait_shows_its_first_line_at_once(database: str, tmp_path: Path) -> None:
    """Piped, ``replay --wait`` printed its first line only when the job was done (stdout was not flushed)."""
    config = config_file(tmp_path, database)
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/h", ["docs:*"])
    # No publisher runs: the job stays running and the command keeps waiting. Python's own buffering, as
    # in a user's shell (not PYTHONUNBUFFERED, which some machines set).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    waiting = subprocess.Popen([sys.executable, "-m", "walhook", "replay", "--config", str(config), "--integration",
                                str(integration), "--offset", "0", "--wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        ready, _, _ = await asyncio.to_thread(select.select, [waiting.stdout], [], [], 30)
        assert ready, "no line on the pipe within 30 s"
        assert waiting.stdout is not None and waiting.stdout.readline().startswith("replay job 1 (integration")
        assert waiting.poll() is None  # still waiting for the job
    finally:
        waiting.kill()
        waiting.wait()


@contextlib.contextmanager
def api_with_organization(database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ``walhook api`` with organization acme: its URL and acme's API key."""
    port, admin = free_port(), "admin-" + "s" * 24
    config = config_file(tmp_path, database)
    config.write_text(config.read_text() + f'[api]\nport = {port}\nadmin_token = "{admin}"\n')
    api = start_walhook("api", config, tmp_path / "api.log")
    try:
        wait_for_port("127.0.0.1", port, 60, api)
        url = f"http://127.0.0.1:{port}"
        admin_headers = {"authorization": f"Bearer {admin}"}
        assert httpx.post(url + "/v1/organizations", json={"id": "acme"}, headers=admin_headers).status_code == 201
        key = httpx.post(url + "/v1/organizations/acme/keys", json={"name": "cli"}, headers=admin_headers).json()
        yield url, key["key"]
    finally:
        stop_process(api)


def test_status_through_the_api_with_an_organization_key_shows_its_own_status(database: str,
                                                                              tmp_path: Path) -> None:
    """``walhook status --api URL --token KEY`` answered 401 with an organization's key; it shows that
    organization's integrations and usage (through a real ``walhook api``), nothing of the deployment."""
    with api_with_organization(database, tmp_path) as (url, key):
        made = httpx.post(url + "/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["docs:*"]},
                          headers={"authorization": f"Bearer {key}"})
        assert made.status_code == 201, made.text
        shown = subprocess.run([sys.executable, "-m", "walhook", "--api", url, "--token", key, "status"],
                               capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("organization acme at ") and "slot" not in shown.stdout
    assert f"{made.json()['id']:<12} acme" in shown.stdout and "manual actions: 0 of" in shown.stdout


def test_an_api_problem_is_shown_as_its_one_line_detail(database: str, tmp_path: Path) -> None:
    """Through a real ``walhook api``, the CLI prints an RFC 9457 problem's ``detail``: a missing delivery,
    and a validation error naming its field, each on one line."""
    with api_with_organization(database, tmp_path) as (url, key):
        remote = [sys.executable, "-m", "walhook", "--api", url, "--token", key, "deliveries"]
        missing = subprocess.run([*remote, "show", "99999"], capture_output=True, text=True, timeout=60)
        invalid = subprocess.run([*remote, "list", "--limit", "1000"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == ("walhook: error: GET /v1/deliveries/99999: HTTP 404: "
                                      "delivery 99999 does not exist")
    assert invalid.returncode == 1 and invalid.stderr.strip() == (
        "walhook: error: GET /v1/deliveries: HTTP 422: query.limit: Input should be less than or equal to 500")


async def test_migrate_brings_an_empty_store_to_the_newest_version(database: str, tmp_path: Path) -> None:
    from models.migrations import MIGRATIONS

    config = config_file(tmp_path, database)
    newest = max(version for version, _ in MIGRATIONS)
    for _ in range(2):  # the second run finds nothing to do
        migrated = walhook(config, "migrate", "--json")
        assert migrated.returncode == 0, migrated.stderr
        assert orjson.loads(migrated.stdout) == {"schema": "walhook", "version": newest}
    async with Store(database) as store:
        rows = await store._rows("SELECT version FROM {s}.schema_migrations ORDER BY version")
    assert [row["version"] for row in rows] == sorted(version for version, _ in MIGRATIONS)


async def test_migrate_names_a_store_it_cannot_reach(tmp_path: Path) -> None:
    config = config_file(tmp_path, f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    failed = walhook(config, "migrate")
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("walhook: error: ") and len(failed.stderr.strip().splitlines()) == 1
