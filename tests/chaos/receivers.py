"""Receivers for the ledger: real HTTP on 127.0.0.1, every request verified, misbehaving on purpose.

One aiohttp server serves every integration at ``/{name}``. Each request is verified with the
``standardwebhooks`` library against the organization's secret, recorded as a ``Hit`` with what the
receiver did about it, and then answered as the integration's ``Behaviour`` says: 204, or during its
fault window one of 500, a hang (never answers; the publisher times out), a connection reset, 429 with
Retry-After, a redirect, a huge body, a slow answer or 410 Gone.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.receivers import serve

HUGE_BODY = b"x" * (4 << 20)
SLOW_SECONDS = 5.0
HANG_SECONDS = 60.0  # far beyond the publisher's request_timeout


@dataclass(frozen=True)
class Hit:
    """One request: whose, its webhook-id, the verified event (None if it did not verify), the outcome."""

    name: str
    webhook_id: str
    event: dict[str, Any] | None
    status: int | None  # what the receiver answered; None: no answer (hang, reset)
    at: float

    @property
    def delivered(self) -> bool:
        return self.event is not None and self.status is not None and 200 <= self.status < 300


@dataclass
class Behaviour:
    """How one integration's receiver answers: ``fault`` during [first request + after, + seconds).

    ``limit`` caps how many requests get the fault (``slow`` and ``gone`` use a few only).
    """

    fault: str = "none"  # none, 500, hang, reset, 429, redirect, huge, slow, gone
    after: float = 0.5
    seconds: float = 5.0
    limit: int | None = None
    first: float | None = field(default=None, init=False)
    faulted: int = field(default=0, init=False)

    def applies(self, now: float) -> bool:
        if self.fault == "none":
            return False
        self.first = self.first if self.first is not None else now
        in_window = self.first + self.after <= now < self.first + self.after + self.seconds
        return in_window and (self.limit is None or self.faulted < self.limit)


@dataclass
class LedgerReceiver:
    """The HTTP server and everything it received."""

    secrets: dict[str, str] = field(default_factory=dict)  # name -> whsec_ secret
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # fault answers given, by kind
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def __aenter__(self) -> LedgerReceiver:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{name}", self._handle)
        app.router.add_post("/{name}/moved", self._moved)
        self._runner, self.port = await serve(app, self.port, handler_cancellation=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _moved(self, request: web.Request) -> web.Response:
        # Where redirects point: the publisher must never follow them, so anything here is a finding.
        self.answers["followed redirect"] += 1
        return web.Response(status=500)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        event = self._verify(name, body, {k.lower(): v for k, v in request.headers.items()})
        behaviour = self.behaviours.get(name, Behaviour())
        fault = behaviour.fault if event is not None and behaviour.applies(time.monotonic()) else "none"
        if fault != "none":
            behaviour.faulted += 1
            self.answers[fault] += 1
        status = 401 if event is None else _status_of(fault)
        now = time.monotonic()
        if event is not None and "batchId" in event:  # a batch: each event counts as delivered on its own
            self.hits.extend(Hit(name, item["webhookId"], item["event"], status, now) for item in event["events"])
        else:
            self.hits.append(Hit(name, request.headers.get("webhook-id", ""), event, status, now))
        return await self._answer(request, fault, status)

    def _verify(self, name: str, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        secret = self.secrets.get(name)
        if secret is None:
            return None
        try:
            event: dict[str, Any] = Webhook(secret).verify(body, headers)
        except (WebhookVerificationError, orjson.JSONDecodeError, ValueError):
            return None
        return event

    async def _answer(self, request: web.Request, fault: str, status: int | None) -> web.StreamResponse:
        if fault == "hang":
            await asyncio.sleep(HANG_SECONDS)
        elif fault == "reset":
            _reset(request)
        elif fault == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        elif fault == "redirect":
            return web.Response(status=302, headers={"location": f"{request.path}/moved"})
        elif fault == "429":
            return web.Response(status=429, headers={"retry-after": "1"})
        body = HUGE_BODY if fault == "huge" else b""
        return web.Response(status=status or 500, body=body)


def _status_of(fault: str) -> int | None:
    return {"none": 204, "500": 500, "hang": None, "reset": None, "429": 429, "redirect": 302, "huge": 200,
            "slow": 204, "gone": 410}[fault]


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of an answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
