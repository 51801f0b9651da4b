"""Endpoints that never answer: they accept each connection, read what comes and keep it open.

The fairness benchmark points a noisy organization's integrations at it, one path per integration
(``/hang/<n>``). It counts what the publisher really holds open - connections now, at most so far,
accepted in all - and which integrations reached it, so a run can show that the noisy load was
there. It reads and drops the bytes; an answer never comes, so each request waits out the
publisher's request timeout and the publisher closes the connection.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class HangingReceiver:
    """A TCP server on 127.0.0.1 that keeps every connection open, unanswered, until the client closes it."""

    def __init__(self) -> None:
        self.open = 0
        self.peak_open = 0
        self.accepted = 0
        self.paths: set[str] = set()  # request targets seen: one per integration that reached it
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, n: int) -> str:
        """The endpoint of noisy integration ``n``."""
        return f"http://127.0.0.1:{self.port}/hang/{n}"

    async def __aenter__(self) -> HangingReceiver:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_for_open(self, count: int, timeout: float) -> bool:
        """Whether ``count`` connections were open at once within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.open < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.open >= count

    def snapshot(self) -> dict[str, int]:
        """What the receiver holds now and has seen so far."""
        return {"open": self.open, "peak_open": self.peak_open, "accepted": self.accepted,
                "integrations_reached": len(self.paths)}

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            request_line = await reader.readline()  # b"POST /hang/7 HTTP/1.1": which integration holds it
            parts = request_line.split()
            if len(parts) >= 2:
                self.paths.add(parts[1].decode(errors="replace"))
            while await reader.read(65536):  # drop the rest; b"" once the publisher gives up and closes
                pass
        except ConnectionError:  # reset by the publisher
            pass
        finally:
            self.open -= 1
            writer.close()
