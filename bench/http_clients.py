"""Which HTTP client should the publisher use? A burst of signed-size POSTs to a local server.

Runs an aiohttp server on 127.0.0.1 that answers 200 at once, then sends the same burst
with aiohttp's client and with httpx, each with the same number of concurrent requests over
reused connections. Prints requests/s for both. Usage: ``python bench/http_clients.py``.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from aiohttp import ClientSession, TCPConnector, web

REQUESTS = 4000
CONCURRENCY = 32
BODY = b'{"eventTimestamp":"2026-01-01T00:00:00Z","data":{"value":{"key":"x","properties":{}}}}' * 12


async def burst(send, requests: int = REQUESTS) -> float:
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await send()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - started)


async def main() -> None:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    headers = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1",
               "webhook-signature": "v1,AAAA"}
    try:
        async with ClientSession(connector=TCPConnector(limit=CONCURRENCY)) as session:
            async def send_aiohttp() -> None:
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
            await burst(send_aiohttp, 500)
            aiohttp_rate = await burst(send_aiohttp)
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits) as client:
            async def send_httpx() -> None:
                (await client.post(url, content=BODY, headers=headers)).read()
            await burst(send_httpx, 500)
            httpx_rate = await burst(send_httpx)
    finally:
        await runner.cleanup()
    print(f"{REQUESTS} POSTs of {len(BODY)} bytes, {CONCURRENCY} concurrent, one server process on loopback")
    print(f"aiohttp client: {aiohttp_rate:8.0f} requests/s")
    print(f"httpx client:   {httpx_rate:8.0f} requests/s")
    print(f"ratio aiohttp/httpx: {aiohttp_rate / httpx_rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
