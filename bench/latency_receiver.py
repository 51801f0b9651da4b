"""The latency benchmark's webhook receiver: arrival time first, then the signature check.

The time is taken when a request's headers have arrived, before its body is read or verified, so the
receiver's own work does not count as walhook's latency. Every request is verified with the
``standardwebhooks`` library (not walhook's signing code); only verified ones count as delivered. It keeps
one float per entity, not the requests, so a run of hundreds of thousands of webhooks stays small.

The server is a bare asyncio protocol over httptools' parser, not a web framework: the receiver shares the
machine's cores with everything it measures, and a framework's request and response objects cost it about as
much CPU per webhook as Postgres spends (docs/benchmarks.md, section 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import TracebackType

import httptools
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ANSWERS = {204: b"HTTP/1.1 204 No Content\r\n\r\n",
           401: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
           404: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"}


def transaction_of(event: dict) -> int:
    """The writer's transaction an event comes from: an insert's row id, or the id an update's note names."""
    value = (event.get("data") or {}).get("value") or {}
    note = (value.get("properties") or {}).get("note") or ""
    return int(note[1:]) if event.get("operationType") == "updated" and note.startswith("u") else int(event["entityId"])


class TimingReceiver:
    """Serves ``POST /hooks`` on 127.0.0.1; ``arrivals`` maps each transaction to its first verified arrival."""

    def __init__(self) -> None:
        self.secret = ""
        self.arrivals: dict[int, float] = {}
        self.verified = 0
        self.rejected = 0
        self.duplicates = 0
        self.url = ""
        self._webhook: Webhook | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()

    async def __aenter__(self) -> TimingReceiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._connections):
                transport.close()
            await self._server.wait_closed()

    async def wait_for(self, ids: Iterable[int], stall_timeout: float, timeout: float | None = None) -> None:
        """Return once every id arrived, when none arrived for ``stall_timeout`` seconds, or after ``timeout``."""
        missing = {i for i in ids if i not in self.arrivals}
        last_progress = time.monotonic()
        deadline = last_progress + (timeout if timeout is not None else float("inf"))
        while missing and time.monotonic() - last_progress < stall_timeout and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            before = len(missing)
            missing = {i for i in missing if i not in self.arrivals}
            if len(missing) < before:
                last_progress = time.monotonic()

    def receive(self, path: bytes, headers: dict[str, str], body: bytes, arrived: float) -> int:
        """One request: its status (204 verified, 401 not)."""
        if path != b"/hooks":
            return 404
        if self._webhook is None:
            self._webhook = Webhook(self.secret)
        try:
            event = self._webhook.verify(body, headers)
        except WebhookVerificationError:
            self.rejected += 1
            return 401
        self.verified += 1
        row_id = transaction_of(event)
        if row_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[row_id] = arrived
        return 204


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools parses, the receiver decides, the answer goes back."""

    def __init__(self, receiver: TimingReceiver) -> None:
        self._receiver = receiver
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._path = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._receiver._connections.add(self._transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver._connections.discard(self._transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_url(self, url: bytes) -> None:
        self._path = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._arrived = time.time()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._receiver.receive(self._path, self._headers, b"".join(self._body), self._arrived)
        assert self._transport is not None
        self._transport.write(ANSWERS[status])
