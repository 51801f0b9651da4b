"""The receivers guide's Python handler, run as the page prints it, against walhook's own requests.

The block under "### Python" in docs/guides/receivers.md is executed as is and served over real
HTTP; the management API's sample (the real sender, signing with the integration's real secret)
posts to it, then the same request again, a tampered copy, a batch signed by the publisher's
signing, and a request signed with another secret. If the page's code stopped verifying walhook's
requests, or stopped deduplicating, this fails.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import Settings
from publisher.sending.dispatch import batch_message
from publisher.sending.signing import generate_secret, webhook_headers
from publisher.store.rows import Delivery
from tests.portal_support import ADMIN, DOCS, organization

GUIDE = Path(__file__).parents[1] / "docs" / "guides" / "receivers.md"


def guide_handler(secret: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The namespace of the guide's Python block, run with ``WALHOOK_SECRET`` set as the page says."""
    found = re.search(r"^### Python\n.*?^```python\n(.*?)^```", GUIDE.read_text(), re.MULTILINE | re.DOTALL)
    assert found, "no Python block under '### Python' in the receivers guide"
    monkeypatch.setenv("WALHOOK_SECRET", secret)
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(found.group(1), str(GUIDE), "exec"), namespace)  # the page's own code
    return namespace


@dataclass
class Served:
    """An HTTP server on 127.0.0.1 that answers each POST with what ``receive(body, headers)`` returns."""

    receive: Callable[[bytes, dict[str, str]], int] = lambda body, headers: 503
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = dict(self.headers.items())
                served.requests.append((body, headers))
                self.send_response(served.receive(body, headers))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def served() -> Iterator[tuple[Served, str]]:
    receiver = Served()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}/walhook"
    finally:
        server.shutdown()
        thread.join()


def test_the_guides_python_handler_verifies_and_deduplicates_walhooks_requests(
        database: str, served: tuple[Served, str], monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, url = served
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as client:
        key = organization(client, "acme")
        made = client.post("/v1/integrations", json={"url": url, "events": ["docs:*"]}, headers=key).json()
        guide = guide_handler(made["secrets"][0], monkeypatch)
        handled: list[tuple[str, str]] = []
        guide["handle"] = lambda webhook_id, event: handled.append((webhook_id, event["operationType"]))
        receiver.receive = guide["receive"]
        sample = client.post(f"/v1/integrations/{made['id']}/sample", json={"entity_key": "docs",
                                                                            "operation": "updated"}, headers=key)
    assert sample.status_code == 200 and sample.json()["status"] == 204, sample.text
    assert handled == [(sample.json()["webhook_id"], "updated")]  # verified, handled once
    ((body, headers),) = receiver.requests
    assert httpx.post(url, content=body, headers=headers).status_code == 204  # the same request again...
    assert len(handled) == 1  # ...is a copy, skipped
    tampered = body.replace(b'"updated"', b'"deleted"', 1)
    assert tampered != body and httpx.post(url, content=tampered, headers=headers).status_code == 401
    _a_batch_is_deduplicated_by_each_events_webhook_id(url, made["secrets"][0], body, handled)


def _a_batch_is_deduplicated_by_each_events_webhook_id(url: str, secret: str, event: bytes,
                                                       handled: list[tuple[str, str]]) -> None:
    now = datetime.now(UTC)
    deliveries = [Delivery(n, 1, f"evt_batch_{n}_i1", f"docs/{n}", event, 0, now) for n in (1, 2)]
    batch_id, body = batch_message(deliveries)
    signed = {"content-type": "application/json", **webhook_headers([secret], batch_id, int(time.time()), body)}
    assert httpx.post(url, content=body, headers=signed).status_code == 204
    assert handled[1:] == [("evt_batch_1_i1", "updated"), ("evt_batch_2_i1", "updated")]
    again, retried = batch_message(deliveries[1:])  # a retry grouped differently: its event was handled already
    resent = {"content-type": "application/json", **webhook_headers([secret], again, int(time.time()), retried)}
    assert httpx.post(url, content=retried, headers=resent).status_code == 204 and len(handled) == 3
    forged = {"content-type": "application/json",
              **webhook_headers([generate_secret()], batch_id, int(time.time()), body)}
    assert httpx.post(url, content=body, headers=forged).status_code == 401
