"""The webhook sender against real sockets on 127.0.0.1: reuse, the SSRF guard, and receivers that misbehave.

Each receiver here is a small asyncio server that answers with exact bytes, so the test decides
what goes over the wire: kept-alive answers, a connection closed while idle or mid-request, a
body that never ends, a redirect, a chunked or close-delimited body, bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from publisher.sending.sender import RESPONSE_BODY_CAP, WebhookSender
from publisher.sending.ssrf import DestinationPolicy

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = DestinationPolicy.from_strings(["127.0.0.1/32", "::1"])
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-seen: yes\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Receiver"], Awaitable[None]]


@dataclass
class Receiver:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def read_request(reader: asyncio.StreamReader, receiver: Receiver) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    request = head + await reader.readexactly(length)
    receiver.requests.append(request)
    return request


@contextlib.asynccontextmanager
async def receiving(handler: Handler) -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer, receiver)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()


def answering(*answers: bytes, close_after: bool = False) -> Handler:
    """Answer each request on a connection with the next of ``answers`` (the last one repeats)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        for n in range(1000):
            await read_request(reader, receiver)
            writer.write(answers[min(n, len(answers) - 1)])
            await writer.drain()
            if close_after:
                return
    return handler


async def attempt(sender: WebhookSender, url: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return await sender.attempt(url, [SECRET], "msg_1", b'{"a":1}', headers)


async def test_requests_reuse_one_kept_alive_connection_and_are_signed() -> None:
    async with receiving(answering(OK)) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        results = [await attempt(sender, receiver.url("/hook?x=1"), {"x-tenant": "acme"}) for _ in range(5)]
    assert [(r.status, r.response_body, r.headers["x-seen"]) for r in results] == [(200, b"ok", "yes")] * 5
    assert receiver.connections == 1 and len(receiver.requests) == 5
    head = receiver.requests[0].split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("post /hook?x=1 http/1.1\r\n")
    for line in (f"host: 127.0.0.1:{receiver.port}", "x-tenant: acme", "webhook-id: msg_1", "content-length: 7",
                 "content-type: application/json", "user-agent: walhook/"):
        assert line in head
    assert "webhook-signature: v1," in head


async def test_a_name_resolving_to_a_refused_address_is_refused_at_connect(caplog: pytest.LogCaptureFixture) -> None:
    async with receiving(answering(OK)) as receiver, WebhookSender(timeout=5) as sender:
        result = await attempt(sender, receiver.url(host="localhost"))
    assert result.status is None and result.error == (
        "refused by the SSRF policy: localhost: destination not allowed "
        "(the host name does not resolve to a public address)")  # the tenant is not told what it resolved to
    assert "127.0.0.1 is a loopback address" in caplog.text  # the operator is
    assert receiver.connections == 0


async def test_an_allowed_name_is_reached_and_a_refused_literal_never_connects() -> None:
    async with receiving(answering(OK)) as receiver:
        async with WebhookSender(timeout=5, policy=LOOPBACK) as sender:
            assert (await attempt(sender, receiver.url(host="localhost"))).status == 200
        async with WebhookSender(timeout=5) as sender:
            refused = await attempt(sender, receiver.url())
    assert "SSRF" in (refused.error or "") and receiver.connections == 1


async def test_a_receiver_that_never_answers_times_out() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        await read_request(reader, receiver)
        await asyncio.sleep(30)

    async with receiving(hang) as receiver, WebhookSender(timeout=0.3, policy=LOOPBACK) as sender:
        started = time.monotonic()
        result = await attempt(sender, receiver.url())
    assert result.status is None and result.error == "timed out after 0.3s"
    assert time.monotonic() - started < 2


async def test_a_reset_before_the_answer_is_a_failed_attempt() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        await read_request(reader, receiver)

    async with receiving(reset) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, receiver.url())
    assert result.status is None and "closed the connection" in (result.error or "")
    assert len(receiver.requests) == 1  # a fresh connection is not resent: the receiver may have acted on it


async def test_a_kept_alive_connection_closed_while_idle_is_replaced() -> None:
    async with receiving(answering(OK, close_after=True)) as receiver, \
            WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        first = await attempt(sender, receiver.url())
        await asyncio.sleep(0.1)  # the receiver has closed the connection by now
        second = await attempt(sender, receiver.url())
    assert (first.status, second.status) == (200, 200) and receiver.connections == 2


async def test_a_huge_body_is_capped_and_not_read_to_its_end() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        await read_request(reader, receiver)
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: 1000000000\r\n\r\n")
        for _ in range(10_000):
            writer.write(b"x" * 65536)
            await writer.drain()

    async with receiving(endless) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        started = time.monotonic()
        result = await attempt(sender, receiver.url())
    assert result.status == 500 and result.response_body == b"x" * RESPONSE_BODY_CAP
    assert time.monotonic() - started < 3


async def test_endless_headers_are_refused_not_buffered() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        await read_request(reader, receiver)
        writer.write(b"HTTP/1.1 200 OK\r\nx-long: ")
        for _ in range(10_000):
            writer.write(b"y" * 65536)
            await writer.drain()

    async with receiving(endless) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        started = time.monotonic()
        result = await attempt(sender, receiver.url())
    assert result.status is None and "headers run past" in (result.error or "")
    assert time.monotonic() - started < 3


async def test_a_name_that_does_not_resolve_reads_like_a_refusal() -> None:
    async with WebhookSender(timeout=5) as sender:
        result = await attempt(sender, "http://no-such-host.invalid/hook")
    assert result.status is None
    assert result.error == ("refused by the SSRF policy: no-such-host.invalid: destination not allowed "
                            "(the host name does not resolve to a public address)")


async def test_redirects_are_returned_not_followed() -> None:
    moved = b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n"
    async with receiving(answering(moved)) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, receiver.url())
    assert result.status == 302 and not result.succeeded and result.headers["location"].endswith("/elsewhere")
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("answer", "body"), [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"HTTP/1.0 201 Created\r\n\r\nuntil the end", b"until the end"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", b""),
], ids=["chunked", "close-delimited", "100-continue"])
async def test_bodies_in_every_framing(answer: bytes, body: bytes) -> None:
    async with receiving(answering(answer, close_after=True)) as receiver, \
            WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, receiver.url())
    assert result.status in (200, 201, 204) and result.response_body == body


async def test_an_answer_that_is_not_http_is_a_failed_attempt() -> None:
    async with receiving(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as receiver, \
            WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, receiver.url())
    assert result.status is None and "HttpError" in (result.error or "")


async def test_a_header_with_a_line_break_is_never_sent() -> None:
    async with receiving(answering(OK)) as receiver, WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, receiver.url(), {"x-evil": "a\r\nx-injected: 1"})
    assert result.status is None and "line break" in (result.error or "") and receiver.requests == []


async def test_nothing_listening_is_a_failed_attempt() -> None:
    async with receiving(answering(OK)) as receiver:
        url = receiver.url()
    async with WebhookSender(timeout=5, policy=LOOPBACK) as sender:
        result = await attempt(sender, url)
    assert result.status is None and "ConnectionRefusedError" in (result.error or "")
