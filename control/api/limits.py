"""The request-body limit, as plain ASGI middleware: it must see the body as it streams in.

A declared ``Content-Length`` over the limit is refused before anything is read. A body without
one (``Transfer-Encoding: chunked``) is counted as it arrives and refused once it passes the
limit, so it is never read whole into memory.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.api.problems import problem


class _TooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; the app's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit), headers={"connection": "close"})


def _message(limit: int) -> str:
    return f"request body over {limit} bytes (the API's max_body_bytes)"


class BodyLimit:
    """Answer 413 to any request whose body is over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._counting(receive), sending)
        except _TooLarge:
            if started:  # the app answered before reading the body; nothing more to say
                return
            await self._refuse(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message
        return counted

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, _message(self.limit), headers={"connection": "close"})
        await response(scope, receive, send)


class NoStore:
    """``Cache-Control: no-store`` on every API answer (``/v1``): they carry keys, signing secrets and
    tenants' data, which no browser or proxy cache may keep. (The portal's pages set it themselves.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, sending)
