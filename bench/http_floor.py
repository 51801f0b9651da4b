"""How fast can Python post webhooks at all? The publisher's sender against a bare HTTP/1.1 loop.

Every client posts the same ~1 KB body with webhook headers to nginx (``return 200;``) over
``--connections`` kept-alive connections for ``--seconds`` each, on uvloop, one after another:

* a bare loop that writes one request and reads the status line, headers and Content-Length
  body: the least a webhook sender must do (the floor);
* walhook's HTTP client (``publisher.sending.http``), and the whole ``WebhookSender.attempt`` (signing,
  SSRF URL check, the attempt result);
* aiohttp's client (the publisher's sender before), and ``pyreqwest`` when it is installed.

    python bench/http_floor.py [--connections 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tools import Nginx, ensure_tools
from publisher.sending.http import HttpClient
from publisher.sending.sender import RESPONSE_BODY_CAP, WebhookSender
from publisher.sending.ssrf import DestinationPolicy

LOOPBACK = DestinationPolicy.from_strings(["127.0.0.1/32"])
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

BODY = b"x" * 1000
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1",
           "webhook-signature": "v1,AAAA"}


async def bare_client(port: int, connections: int, seconds: float) -> float:
    """Requests/s of a minimal keep-alive HTTP/1.1 POST loop on asyncio streams."""
    head = "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
    request = (f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}Content-Length: {len(BODY)}\r\n\r\n"
               ).encode() + BODY

    async def connection() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            writer.write(request)
            response = await reader.readuntil(b"\r\n\r\n")
            assert response[9:12] == b"200", response[:40]
            length = next((int(line[15:]) for line in response.split(b"\r\n")
                           if line[:15].lower() == b"content-length:"), 0)
            if length:
                await reader.readexactly(length)
            done += 1
        writer.close()
        return done

    started = time.monotonic()
    counts = await asyncio.gather(*(connection() for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started)


async def aiohttp_client(port: int, connections: int, seconds: float) -> float:
    """Requests/s of aiohttp's client, the publisher's sender today."""
    url = f"http://127.0.0.1:{port}/hook"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def connection() -> int:
            done, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                async with session.post(url, data=BODY, headers=HEADERS) as response:
                    await response.read()
                done += 1
            return done

        started = time.monotonic()
        counts = await asyncio.gather(*(connection() for _ in range(connections)))
        return sum(counts) / (time.monotonic() - started)


async def loop_for(seconds: float, connections: int, send) -> float:  # type: ignore[no-untyped-def]
    """Requests/s of ``connections`` loops each awaiting ``send()`` for ``seconds``."""
    async def connection() -> int:
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            await send()
            done += 1
        return done

    started = time.monotonic()
    counts = await asyncio.gather(*(connection() for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started)


async def walhook_client(port: int, connections: int, seconds: float) -> float:
    """Requests/s of publisher.sending.http.HttpClient alone."""
    client = HttpClient(LOOPBACK, 15.0, RESPONSE_BODY_CAP, "walhook/bench")
    url = f"http://127.0.0.1:{port}/hook"

    async def send() -> None:
        status, _, _ = await client.post(url, HEADERS, BODY)
        assert status == 200

    try:
        return await loop_for(seconds, connections, send)
    finally:
        await client.close()


async def walhook_attempt(port: int, connections: int, seconds: float) -> float:
    """Requests/s of WebhookSender.attempt: signing, the URL check and the result included."""
    url = f"http://127.0.0.1:{port}/hook"
    async with WebhookSender(15.0, policy=LOOPBACK) as sender:
        async def send() -> None:
            result = await sender.attempt(url, [SECRET], "msg_1", BODY)
            assert result.status == 200, result.describe()

        return await loop_for(seconds, connections, send)


async def pyreqwest_client(port: int, connections: int, seconds: float) -> float | None:
    """Requests/s of pyreqwest (reqwest, Rust), None when it is not installed."""
    try:
        from pyreqwest.client import ClientBuilder
    except ImportError:
        return None
    client = ClientBuilder().http1_only().build()
    url = f"http://127.0.0.1:{port}/hook"

    async def send() -> None:
        response = await client.post(url).headers(HEADERS).body_bytes(BODY).build().send()
        await response.bytes()
        assert response.status == 200

    return await loop_for(seconds, connections, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ensure_tools(["nginx"])
    with Nginx(Path(tempfile.mkdtemp(prefix="walhook-bench-http-"))) as nginx:
        rates = {name: uvloop.run(run(nginx.port, args.connections, args.seconds)) for name, run in [
            ("bare HTTP/1.1 loop", bare_client), ("walhook HttpClient", walhook_client),
            ("walhook attempt()", walhook_attempt), ("aiohttp client", aiohttp_client),
            ("pyreqwest client", pyreqwest_client)]}
    print(f"POSTs of {len(BODY)} bytes to nginx, {args.connections} connections, uvloop")
    bare = rates["bare HTTP/1.1 loop"]
    for name, rate in rates.items():
        shown = "not installed" if rate is None else f"{rate:8.0f} requests/s   {rate / bare:.2f} of the bare loop"
        print(f"{name:20s} {shown}")


if __name__ == "__main__":
    main()
