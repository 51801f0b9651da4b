"""Smoke version of bench/http_floor.py: every client posts, and every answer is a 200."""

from __future__ import annotations

from aiohttp import web

from bench.http_floor import aiohttp_client, bare_client, walhook_attempt, walhook_client
from tests.receivers import serve


async def test_every_client_posts_to_a_local_server() -> None:
    received: list[int] = []

    async def ok(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner, port = await serve(app)
    try:
        assert await bare_client(port, connections=2, seconds=0.3) > 0
        assert await aiohttp_client(port, connections=2, seconds=0.3) > 0
        assert await walhook_client(port, connections=2, seconds=0.3) > 0
        assert await walhook_attempt(port, connections=2, seconds=0.3) > 0
    finally:
        await runner.cleanup()
    assert received and set(received) == {1000}
