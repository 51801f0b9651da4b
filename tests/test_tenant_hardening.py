"""What one organization (or its receiver) may set or send cannot reach into the shared machinery:
reserved request headers, the attempt log's size, the operator endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import orjson
import psycopg
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from publisher.api.app import create_app
from publisher.api.schemas import IntegrationIn, IntegrationPatch
from publisher.headers import OMITTED, capped_response_headers
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver, always
from tests.test_delivery import event, org_with, produce, publishing, until
from walhook.config import Settings

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
        (attempt,) = await store.attempts_of(delivery["id"])
    stored = attempt["response_headers"]
    assert len(orjson.dumps(stored)) < 20 * 1024 and len(stored) <= 65
    assert "x-flood-0" in stored and "headers" in stored[OMITTED]
    assert attempt["response_status"] == 500


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
    settings = Settings(store={"dsn": database}, api={"admin_token": ADMIN, **api})
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
    from publisher.api.serve import serve

    api_port, operator_port = _free_port(), _free_port()
    settings = Settings(store={"dsn": database}, api={"admin_token": ADMIN, "port": api_port,
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
