"""Serving the management API: ``[api] host:port``, and ``[api] operator_address`` when set.

Both addresses are served by one uvicorn server and one app (one store and sender), each from a
socket bound here; the operator socket's port is what tells the app a request came in on it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

from control.api.app import create_app
from models.logs import json_lines
from models.settings import split_address
from publisher.errors import PublisherError

if TYPE_CHECKING:
    from models.settings import Settings

log = logging.getLogger("walhook.api")


def _listen(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise PublisherError(f"{what} {host}:{port}: cannot listen: {exc}") from exc


def _sockets(settings: Settings) -> tuple[list[socket.socket], int | None]:
    """The listening sockets (the API's first) and the operator socket's port, if any."""
    sockets = [_listen(settings.api.host, settings.api.port, "[api] host:port")]
    if settings.api.operator_address is None:
        return sockets, None
    host, port = split_address(settings.api.operator_address)
    if port == sockets[0].getsockname()[1]:
        sockets[0].close()
        raise PublisherError(f"[api] operator_address {settings.api.operator_address}: use another port than "
                             f"[api] port, which serves the API")
    sockets.append(_listen(host, port, "[api] operator_address"))
    return sockets, sockets[1].getsockname()[1]


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handling) or until ``stop`` is set."""
    app = create_app(settings)
    sockets, app.state.operator_port = _sockets(settings)
    # With JSON lines uvicorn's loggers go through walhook's handler; otherwise they keep uvicorn's own format.
    logs: dict[str, Any] = {"log_config": None} if json_lines() else {}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **logs))
    watcher = asyncio.create_task(_stop_on(stop, server)) if stop is not None else None
    try:
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            log.info("ready: %s", _listening(settings, sockets))
        await serving
    finally:
        if watcher is not None:
            watcher.cancel()
        for sock in sockets:
            sock.close()


def _listening(settings: Settings, sockets: list[socket.socket]) -> str:
    host, port = sockets[0].getsockname()[:2]
    text = f"management API on http://{host}:{port} (docs at /docs)"
    if len(sockets) > 1:
        text += f"; /metrics and /readyz on http://{settings.api.operator_address}"
    return text + ("" if settings.api.admin_token else "; no [api] admin_token: the admin routes answer 401")


async def _stop_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
