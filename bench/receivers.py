"""Receivers of the delivery benchmark that need nothing but Python.

* ``python bench/receivers.py --port N`` (``PythonReceiver``): an aiohttp server in its own process
  that answers every POST with an empty 200 at once and counts the POSTs per path; ``GET /counts``
  returns the counts as JSON. The stand-in for nginx where nginx is not installed, and the counting
  receiver of the smoke test.
* ``HangingEndpoint``: accepts connections, reads whatever comes and never answers (in the caller's
  event loop), the "slow endpoint" of benchmark 5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from aiohttp import web

from walhook.stack import free_port, spawn, stop_process, wait_for_port


def receiver_app() -> web.Application:
    """POST anything: 200, counted by path. GET /counts: the counts."""
    counts: Counter[str] = Counter()

    async def post(request: web.Request) -> web.Response:
        await request.read()
        counts[request.path] += 1
        return web.Response(status=200)

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    app = web.Application()
    app.router.add_get("/counts", get_counts)
    app.router.add_post("/{tail:.*}", post)
    return app


class PythonReceiver:
    """``receiver_app`` in a child process on 127.0.0.1:``port``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PythonReceiver:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = spawn([sys.executable, __file__, "--port", str(self.port)], self.directory / "receiver.log")
        wait_for_port("127.0.0.1", self.port, 20.0, self.process)
        return self

    def counts(self) -> dict[str, int]:
        """POSTs received so far, by path."""
        with urllib.request.urlopen(f"{self.url}/counts", timeout=10) as response:
            return {str(path): int(count) for path, count in json.load(response).items()}

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def __enter__(self) -> PythonReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class HangingEndpoint:
    """A TCP server on 127.0.0.1 that accepts connections and never answers a request."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the endpoint first"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hangs"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.add(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass  # read, so the client's writes never block, and say nothing
        self._held.discard(writer)

    async def __aenter__(self) -> HangingEndpoint:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._held):
                writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="answer every POST with 200 at once, counting them by path")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(receiver_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
