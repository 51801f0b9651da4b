"""How fast can Python post webhooks at all? aiohttp's client against a bare HTTP/1.1 loop.

Both post the same ~1 KB body with webhook headers to nginx (``return 200;``) over
``--connections`` kept-alive connections for ``--seconds`` each, on uvloop. The bare client
writes one request and reads the status line, headers and Content-Length body: the least a
webhook sender must do. The gap between the two is what a leaner client would win for the
publisher (see BENCHMARKS.md, delivery throughput).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ensure_tools(["nginx"])
    with Nginx(Path(tempfile.mkdtemp(prefix="walhook-bench-http-"))) as nginx:
        bare = uvloop.run(bare_client(nginx.port, args.connections, args.seconds))
        client = uvloop.run(aiohttp_client(nginx.port, args.connections, args.seconds))
    print(f"POSTs of {len(BODY)} bytes to nginx, {args.connections} connections, uvloop")
    print(f"bare HTTP/1.1 loop: {bare:8.0f} requests/s")
    print(f"aiohttp client:     {client:8.0f} requests/s")
    print(f"ratio bare/aiohttp: {bare / client:.2f}")


if __name__ == "__main__":
    main()
