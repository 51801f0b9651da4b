"""Backfill jobs through the management API and the CLI: start, refuse, follow, pause, resume, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import Settings
from tests.test_api import ADMIN, DOCS, make_integration, tenant
from tests.test_cli import config_file
from walhook.cli import main


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, org text, title text)")
        conn.execute("CREATE TABLE keyless (id int, org text)")
    keyless = {**DOCS, "table": "public.keyless", "entity_key": "keyless"}
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS, keyless])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_backfill_is_started_followed_paused_resumed_and_cancelled(client: TestClient) -> None:
    acme = tenant(client, "acme")
    integration = make_integration(client, acme, events=["docs:*,read"])
    started = client.post("/v1/backfills", json={"entity_key": "docs", "integration_id": integration["id"],
                                                 "filter": "title IS NOT NULL"}, headers=acme)
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["state"], job["table_name"], job["integration_id"], job["rows_read"]) == (
        "running", "public.docs", integration["id"], 0)
    again = client.post("/v1/backfills", json={"entity_key": "docs", "integration_id": integration["id"]},
                        headers=acme)
    assert again.status_code == 409 and "already running or paused" in again.json()["detail"]
    assert client.post("/v1/backfills", json={"entity_key": "docs"}, headers=acme).status_code == 202  # for all
    assert [j["id"] for j in client.get("/v1/backfills", headers=acme).json()][-1] == job["id"]
    url = f"/v1/backfills/{job['id']}"
    assert client.post(f"{url}/pause", headers=acme).json()["state"] == "paused"
    refused = client.post(f"{url}/pause", headers=acme)
    assert refused.status_code == 409 and "is paused" in refused.json()["detail"]
    assert client.post(f"{url}/resume", headers=acme).json()["state"] == "running"
    cancelled = client.post(f"{url}/cancel", headers=acme).json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    assert client.get(url, headers=acme).json()["state"] == "cancelled"
    assert client.post(f"{url}/explode", headers=acme).status_code == 422


def test_refusals_name_the_reason(client: TestClient) -> None:
    acme = tenant(client, "acme")
    cases = [({"entity_key": "keyless"}, "no primary key and no replica identity index"),
             ({"entity_key": "docs", "filter": "colour = 'red'"}, "unknown column(s) colour"),
             ({"entity_key": "docs", "filter": "id > 1 OR true"}, "expected AND"),
             ({"entity_key": "nope"}, "no captured table 'nope'"),
             ({"entity_key": "docs"}, "no enabled integration of organization 'acme' subscribes to docs:read")]
    for body, reason in cases:
        response = client.post("/v1/backfills", json=body, headers=acme)
        assert response.status_code == 422 and reason in response.json()["detail"], (body, response.text)


def test_another_organizations_backfill_is_not_found(client: TestClient) -> None:
    acme, globex = tenant(client, "acme"), tenant(client, "globex")
    foreign = make_integration(client, globex, events=["docs:read"])
    assert client.post("/v1/backfills", json={"entity_key": "docs", "integration_id": foreign["id"]},
                       headers=acme).status_code == 404
    job = client.post("/v1/backfills", json={"entity_key": "docs"}, headers=globex).json()
    for method, path in (("get", ""), ("post", "/pause"), ("post", "/cancel")):
        assert getattr(client, method)(f"/v1/backfills/{job['id']}{path}", headers=acme).status_code == 404
    assert client.get("/v1/backfills", headers=acme).json() == []


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    """``walhook backfill ACTION --config F ARGS...`` in this process (a child process per call costs seconds)."""
    code = main(["--log-level", "WARNING", "--event-loop", "asyncio", "backfill", args[0], "--config", str(config),
                 *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_starts_lists_and_changes_backfills(database: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, org text)")
    config = config_file(tmp_path, database)
    config.write_text(config.read_text() + f'[source]\ndsn = "{database}"\n[[entities]]\ntable = "docs"\n'
                      'entity_key = "docs"\nentity_path = "docs/{id}"\ncollection_path = "docs"\n')
    code, _, err = cli(capsys, config, "start", "--table", "docs")
    assert code == 1 and "no enabled integration subscribes to docs:read" in err.splitlines()[-1]
    for command in (["orgs", "add", "acme"], ["integrations", "add", "--org", "acme", "--url", "http://127.0.0.1:9/h",
                                              "--events", "docs:read"]):
        assert main(["--log-level", "WARNING", "--event-loop", "asyncio", *command[:2], "--config", str(config),
                     *command[2:]]) == 0
    capsys.readouterr()
    code, out, err = cli(capsys, config, "start", "--table", "docs", "--where", "id > 10", "--json")
    assert code == 0, err
    job = orjson.loads(out.splitlines()[0])
    assert job["state"] == "running" and job["filter"] == "id > 10"
    code, out, err = cli(capsys, config, "start", "--entity-key", "docs", "--where", "nope = 1")
    assert code == 1 and "unknown column(s) nope" in err.splitlines()[-1]
    code, out, _ = cli(capsys, config, "list")
    assert out.splitlines()[0].split()[:4] == ["ID", "TABLE_NAME", "INTEGRATION_ID", "STATE"]
    paused = cli(capsys, config, "pause", str(job["id"]))[1]
    assert paused.startswith(f"backfill {job['id']} of public.docs for every subscriber to docs:read: paused")
    assert "paused" in cli(capsys, config, "show", str(job["id"]))[1]
    cli(capsys, config, "cancel", str(job["id"]))
    code, out, err = cli(capsys, config, "show", str(job["id"]), "--follow")
    assert code == 0 and "cancelled" in out
