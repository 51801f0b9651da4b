"""What one organization (or its receiver) may set or send cannot reach into the shared machinery:
reserved request headers, the attempt log's size, the operator endpoints."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from pydantic import ValidationError

from publisher.api.schemas import IntegrationIn, IntegrationPatch
from publisher.headers import OMITTED, capped_response_headers
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver, always
from tests.test_delivery import event, org_with, produce, publishing, until

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
