"""What one organization (or its receiver) may set or send cannot reach into the shared machinery:
reserved request headers, the attempt log's size, the operator endpoints."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import aiohttp
import orjson
import psycopg
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from control.api.app import create_app
from control.api.schemas import IntegrationIn, IntegrationPatch
from models.errors import ConfigError, Conflict, SecretError
from models.settings import Settings
from publisher.sending.headers import OMITTED, capped_response_headers
from publisher.sending.signing import MAX_ACTIVE_SECRETS, signature_header
from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver, always
from tests.test_cli import config_file
from tests.test_delivery import event, org_with, produce, publishing, until
from walhook.secret_input import organization_secrets, read_secret

ADMIN = "admin-token-" + "y" * 20
ADMIN_AUTH = {"authorization": f"Bearer {ADMIN}"}

RESERVED = ["Transfer-Encoding", "content-length", "Connection", "Keep-Alive", "Upgrade", "TE", "Trailer",
            "Expect", "Host", "Content-Encoding", "Proxy-Authorization", "proxy-connection", "webhook-id",
            "Webhook-Anything", "content-type", "User-Agent"]


@pytest.mark.parametrize("name", RESERVED)
def test_framing_hop_by_hop_and_walhook_headers_are_reserved(name: str) -> None:
    body = {"url": "https://hooks.example/x", "events": ["docs:*"], "headers": {"x-ok": "1", name: "v"}}
    with pytest.raises(ValidationError, match="is reserved"):
        IntegrationIn.model_validate(body)
    with pytest.raises(ValidationError, match="is reserved"):
        IntegrationPatch.model_validate({"headers": {name: "v"}})


def test_ordinary_custom_headers_are_allowed() -> None:
    headers = {"Authorization": "Bearer abc", "X-Tenant": "acme", "traceparent": "00-1-2-01"}
    body = IntegrationIn.model_validate({"url": "https://hooks.example/x", "events": ["docs:*"], "headers": headers})
    assert body.headers == headers


async def test_reserved_headers_stored_earlier_never_go_out(servers: Servers, database: str, topic: str) -> None:
    stored = {"x-tenant": "acme", "Transfer-Encoding": "chunked", "Connection": "upgrade", "Expect": "100-continue",
              "Host": "internal.example", "webhook-signature": "v1,forged"}
    async with ScriptedReceiver() as receiver, \
            org_with(database, receiver, "hook", headers=stored) as (store, _), publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
    (hit,) = receiver.verified()  # the forged signature did not replace walhook's
    assert hit.headers["x-tenant"] == "acme"
    assert "transfer-encoding" not in hit.headers and "expect" not in hit.headers
    assert hit.headers["host"].startswith("127.0.0.1:") and hit.headers.get("connection") != "upgrade"


def test_capped_response_headers_keep_what_fits_and_count_the_rest() -> None:
    headers = {f"x-h{i}": "v" * 100 for i in range(10)}
    assert capped_response_headers(headers) == headers
    assert capped_response_headers({}) is None
    by_count = capped_response_headers(headers, max_count=3)
    assert by_count is not None and list(by_count)[:3] == ["x-h0", "x-h1", "x-h2"]
    assert by_count[OMITTED] == "7 headers (728 bytes) over the attempt log's limit"
    by_bytes = capped_response_headers(headers, max_bytes=250)
    assert by_bytes is not None and len(by_bytes) == 3 and by_bytes[OMITTED].startswith("8 headers")


async def test_a_hostile_receiver_cannot_fill_the_attempt_log(servers: Servers, database: str, topic: str) -> None:
    flood = {f"x-flood-{i}": "v" * 8000 for i in range(100)}  # 800 KB, within aiohttp's own limits
    async with ScriptedReceiver(scripts={"hook": always(500, headers=flood)}) as receiver, \
            org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, retry_delays=[0]):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
        await asyncio.sleep(0.3)
        (delivery,) = await store.deliveries(ids["hook"], status="failed")
        (attempt,) = await store.attempts_of(delivery.id)
    stored = attempt.response_headers
    assert stored is not None
    assert len(orjson.dumps(stored)) < 20 * 1024 and len(stored) <= 65
    assert "x-flood-0" in stored and "headers" in stored[OMITTED]
    assert attempt.response_status == 500


async def test_retry_after_is_read_before_the_headers_are_capped(servers: Servers, database: str, topic: str) -> None:
    flood = {f"x-flood-{i}": "v" * 1000 for i in range(100)}
    script = {"hook": lambda path, n: Answer(429, headers={**flood, "Retry-After": "1"}) if n == 0 else Answer(204)}
    async with ScriptedReceiver(scripts=script) as receiver, \
            org_with(database, receiver, "hook") as (store, _), publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 2)
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.9  # the flood did not hide Retry-After


# The operator endpoints


def _api_client(database: str, **api: object) -> TestClient:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN, **api})
    return TestClient(create_app(settings))


def _failing_integration(client: TestClient, database: str) -> int:
    org = client.post("/v1/organizations", json={"id": "acme"}, headers=ADMIN_AUTH)
    assert org.status_code == 201
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute("INSERT INTO walhook.integrations (organization_id, name, url, events, failing_since) "
                           "VALUES ('acme', 'crm', 'https://hooks.example/x', '[\"docs:*\"]', "
                           "now() - interval '1 hour') RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_operator_endpoints_need_the_admin_token_by_default(database: str, path: str) -> None:
    with _api_client(database) as client:
        org_key = client.post("/v1/organizations", json={"id": "acme"}, headers=ADMIN_AUTH)
        key = client.post("/v1/organizations/acme/keys", json={"name": "k"}, headers=ADMIN_AUTH).json()["key"]
        assert org_key.status_code == 201
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"authorization": f"Bearer {key}"}).status_code == 401  # a tenant's key
        assert client.get(path, headers=ADMIN_AUTH).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}  # liveness tells nothing, and stays open


def test_metrics_name_no_integration_unless_asked(database: str) -> None:
    with _api_client(database) as client:
        integration = _failing_integration(client, database)
        text = client.get("/metrics", headers=ADMIN_AUTH).text
    assert "integration=" not in text and "acme" not in text
    assert "walhook_integrations_failing 1" in text
    seconds = float(text.split("\nwalhook_integration_failing_seconds_max ")[1].split()[0])
    assert 3500 < seconds < 3700
    with _api_client(database, metrics_per_integration=True) as client:
        text = client.get("/metrics", headers=ADMIN_AUTH).text
    assert f'walhook_integration_failing_seconds{{integration="{integration}"}}' in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_operator_address_serves_them_apart_from_the_api(database: str) -> None:
    from control.api.serve import serve

    api_port, operator_port = _free_port(), _free_port()
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN, "port": api_port,
                                                      "operator_address": f"127.0.0.1:{operator_port}"})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        async with aiohttp.ClientSession() as http:
            api, operator = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{operator_port}"
            await _until_listening(http, f"{operator}/healthz")
            for path in ("/metrics", "/readyz"):
                async with http.get(operator + path) as response:  # no token: the address is the protection
                    assert response.status == 200, await response.text()
                async with http.get(api + path, headers=ADMIN_AUTH) as response:
                    assert response.status == 404
            async with http.get(f"{operator}/v1/organizations", headers=ADMIN_AUTH) as response:
                assert response.status == 404  # the operator address serves nothing else
            async with http.get(f"{api}/v1/organizations", headers=ADMIN_AUTH) as response:
                assert response.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _until_listening(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(100):
        with contextlib.suppress(aiohttp.ClientConnectionError):
            async with http.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing answered on {url}")


@pytest.mark.parametrize("address", ["9465", "localhost", "127.0.0.1:99999", ":80"])
def test_a_bad_operator_address_is_named(address: str) -> None:
    with pytest.raises(ValidationError, match="expected host:port"):
        Settings(api={"operator_address": address})


# The store: secrets and keys


def _secret_of(size: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * size).decode()


async def test_rotations_are_capped_per_organization_and_integration(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        for owner, what in ((None, "organization acme"), (integration, f"integration {integration}")):
            for _ in range(MAX_ACTIVE_SECRETS - 1):
                await store.rotate_secret("acme", owner, timedelta(hours=1))
            before = (await store.integration(integration)).secrets
            assert len(before) == MAX_ACTIVE_SECRETS
            with pytest.raises(Conflict, match=f"{what} already has {MAX_ACTIVE_SECRETS} active signing secrets"):
                await store.rotate_secret("acme", owner, timedelta(hours=1))
            assert (await store.integration(integration)).secrets == before  # the refused rotation changed nothing
            newest = await store.rotate_secret("acme", owner, timedelta(0))  # no overlap: always possible
            assert (await store.integration(integration)).secrets == [newest]


async def test_rotation_spam_cannot_grow_the_signature_header(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        refused = 0
        for _ in range(30):
            with contextlib.suppress(Conflict):
                await store.rotate_secret("acme", None, timedelta(hours=24))
                continue
            refused += 1
        secrets = (await store.integration(integration)).secrets
    assert refused == 30 - (MAX_ACTIVE_SECRETS - 1) and len(secrets) == MAX_ACTIVE_SECRETS
    assert len(signature_header(secrets, "msg_1", 1, b"{}")) < 200


def test_the_api_answers_a_refused_rotation_with_409(database: str) -> None:
    with _api_client(database) as client:
        client.post("/v1/organizations", json={"id": "acme"}, headers=ADMIN_AUTH)
        key = client.post("/v1/organizations/acme/keys", json={"name": "k"}, headers=ADMIN_AUTH).json()["key"]
        auth = {"authorization": f"Bearer {key}"}
        statuses = [client.post("/v1/secret/rotate", json={"overlap_hours": 24}, headers=auth).status_code
                    for _ in range(MAX_ACTIVE_SECRETS)]
        refused = client.post("/v1/secret/rotate", json={"overlap_hours": 24}, headers=auth)
    assert statuses[:MAX_ACTIVE_SECRETS - 1] == [200] * (MAX_ACTIVE_SECRETS - 1) and statuses[-1] == 409
    assert refused.status_code == 409 and "overlap_hours 0" in refused.json()["detail"]


async def test_the_first_own_secret_keeps_the_organizations_signing_for_the_overlap(database: str) -> None:
    async with Store(database) as store:
        org_secret = await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        own = await store.rotate_secret("acme", integration, timedelta(seconds=1))
        assert (await store.integration(integration)).secrets == [own, org_secret]  # receivers still verify
        later = await store.rotate_secret("acme", None, timedelta(0))  # the organization's own rotation...
        assert (await store.integration(integration)).secrets == [own, org_secret]  # ...overrides no longer apply
        await asyncio.sleep(1.2)
        assert (await store.integration(integration)).secrets == [own]
        assert later not in (await store.integration(integration)).secrets


async def test_the_overlap_never_outlives_the_organizations_secret(database: str) -> None:
    async with Store(database) as store:
        old = await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        new = await store.rotate_secret("acme", None, timedelta(seconds=1))  # old expires in 1 s
        own = await store.rotate_secret("acme", integration, timedelta(hours=24))
        assert (await store.integration(integration)).secrets == [own, new, old]
        await asyncio.sleep(1.2)
        assert (await store.integration(integration)).secrets == [own, new]


async def test_a_key_check_that_fails_does_not_touch_last_used_at(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        row, key = await store.add_api_key("acme", "backend")
        # The prefix is not secret: anyone may present it with a guessed rest.
        assert await store.organization_of_key(f"whk_{row.prefix}_guessed") is None
        assert (await store.api_keys("acme"))[0].last_used_at is None
        assert await store.organization_of_key(key) == "acme"
        assert (await store.api_keys("acme"))[0].last_used_at is not None


@pytest.mark.parametrize("size", [1, 16, 23, 65])
async def test_a_given_secret_outside_24_to_64_bytes_is_refused(database: str, size: int) -> None:
    async with Store(database) as store:
        with pytest.raises(SecretError, match="24 to 64"):
            await store.add_organization("acme", _secret_of(size))
        await store.add_organization("acme", _secret_of(24))
        with pytest.raises(SecretError, match="24 to 64"):
            await store.rotate_secret("acme", None, timedelta(0), secret=_secret_of(size))


# Secrets given to the command line


def test_a_secret_is_read_from_a_file_or_standard_input(tmp_path: Path) -> None:
    secret = _secret_of(32)
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    assert read_secret(str(path)) == secret
    assert read_secret("-", io.StringIO(f"  {secret}\n")) == secret
    assert organization_secrets([f"acme={path}"]) == {"acme": secret}


@pytest.mark.parametrize(("content", "words"), [
    ("", "it is empty"), ("whsec_" + base64.b64encode(b"k").decode(), "1 bytes; Standard Webhooks requires 24"),
    ("whsec_not base64!", "base64"),
])
def test_a_bad_secret_file_is_named(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"--secret-file {re.escape(str(path))}: .*{re.escape(words)}"):
        read_secret(str(path))
    with pytest.raises(ConfigError, match="cannot read it"):
        read_secret(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ORGANIZATION=FILE"):
        organization_secrets([str(path)])


def _cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    words = 2 if args[0] in ("orgs", "integrations") else 1
    command = [sys.executable, "-m", "walhook", "--log-level", "WARNING", *args[:words], "--config", str(config),
               *args[words:]]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


def test_the_cli_takes_a_secret_from_standard_input_or_a_file_never_argv(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    secret = _secret_of(32)
    on_argv = _cli(config, "orgs", "add", "acme", "--secret", secret)
    assert on_argv.returncode == 2 and "--secret-file" in on_argv.stderr and secret not in on_argv.stdout
    created = _cli(config, "orgs", "add", "acme", "--secret-file", "-", "--json", stdin=secret + "\n")
    assert created.returncode == 0, created.stderr
    assert orjson.loads(created.stdout)["secret"] == secret
    short = tmp_path / "short"
    short.write_text(_secret_of(1))
    refused = _cli(config, "integrations", "add", "--org", "globex", "--url", "http://127.0.0.1:9/hook",
                   "--events", "docs:*", "--secret-file", str(short))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"walhook: error: --secret-file {short}: signing secret is 1 bytes; Standard Webhooks requires 24 to 64 "
        "(generate one with: openssl rand -base64 32)")


def test_the_cli_refuses_reserved_custom_headers(database: str, tmp_path: Path) -> None:
    refused = _cli(config_file(tmp_path, database), "integrations", "add", "--org", "acme", "--url",
                   "http://127.0.0.1:9/hook", "--events", "docs:*", "--header", "Transfer-Encoding: chunked")
    assert refused.returncode == 1
    assert "header name 'Transfer-Encoding' is reserved" in refused.stderr.strip().splitlines()[-1]
