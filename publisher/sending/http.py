"""A lean HTTP/1.1 client for webhook POSTs: kept-alive connections per host, llhttp for responses.

Every request the publisher makes is a POST of bytes it already has, to a URL it already
checked, with redirects never followed and the response body only kept up to a cap. A general
client (aiohttp) spent half the publisher's CPU doing more than that; this one writes the request
in one call and lets ``httptools`` (llhttp, the parser Node.js uses) read the answer.

* Connections are reused per (scheme, host, port), one request at a time each; a connection the
  receiver closed while idle is replaced, and the request resent once when the receiver closed a
  reused connection before answering anything.
* Each new connection resolves the host and checks EVERY address against the SSRF policy
  (``publisher.sending.ssrf``) before connecting to the one allowed address it then uses, so a name that
  resolves somewhere private is refused on the address actually used (DNS rebinding included).
* TLS goes through ``ssl`` with the system's default verification.
* A response is complete at its end (Content-Length, chunked, or the connection closing), or as
  soon as ``body_cap`` bytes of its body arrived: the rest is not read and the connection closed.
  A status line and headers past ``MAX_HEAD_BYTES`` fail the attempt instead of being buffered.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

import httptools
from yarl import URL

from publisher.errors import HttpError
from publisher.sending.connections import ConnectionBudget, process_limit
from publisher.sending.ssrf import DestinationPolicy, all_refused, unresolvable

Answer = tuple[int, dict[str, str], bytes]
"""Status, response headers (lower-case names), body (at most the cap)."""

MAX_HEAD_BYTES = 1024 * 1024
"""A status line and headers longer than this are refused: a hostile receiver must not make the
publisher buffer without end. (What the attempt log keeps of them is capped far lower, by
``publisher.sending.headers``.)"""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, and the start of every request to it."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: bytes  # request line and Host header


def target_of(url: str) -> Target:
    parsed = URL(url)
    host, port = parsed.raw_host or "", parsed.port or 0
    head = f"POST {parsed.raw_path_qs} HTTP/1.1\r\nhost: {parsed.host_port_subcomponent}\r\n".encode()
    return Target((parsed.scheme, host, port), host, port, parsed.scheme == "https", head)


class Connection(asyncio.Protocol):
    """One kept-alive connection; ``request`` writes a request and resolves with its answer."""

    def __init__(self, body_cap: int) -> None:
        self._cap = body_cap
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._headers_done = False
        self._head_bytes = 0
        self.alive = True
        self.answered = False  # any byte of the current response arrived

    def request(self, data: bytes) -> asyncio.Future[Answer]:
        assert self._transport is not None and self.alive
        self._headers, self._body, self._headers_done, self.answered = {}, bytearray(), False, False
        self._head_bytes = 0
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.alive = False
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"the receiver's answer is not HTTP/1.1: {exc}"))
            return
        if not self._headers_done and self.alive:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(HttpError(f"the receiver's status line and headers run past {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._headers_done:  # a body delimited by the connection closing ends here
            self._finish()
        self._fail(exc or ConnectionResetError("the receiver closed the connection before answering"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("utf-8", "replace")

    def on_headers_complete(self) -> None:
        self._headers_done = self._parser.get_status_code() >= 200

    def on_body(self, body: bytes) -> None:
        room = self._cap - len(self._body)
        self._body += body[:room]
        if len(body) >= room:  # the cap: the rest is never read, so the connection cannot be reused
            self.close()
            self._finish()

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # 100 Continue and friends: the answer follows
            self._headers = {}
            return
        if not self._parser.should_keep_alive():
            self.close()
        self._finish()

    def _finish(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), self._headers, bytes(self._body)))

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class HttpClient:
    """POSTs over pooled connections, each checked against ``policy`` when it is opened."""

    def __init__(self, policy: DestinationPolicy, timeout: float, body_cap: int, user_agent: str,
                 max_connections: int = 1024, max_connections_per_organization: int = 256) -> None:
        self.policy = policy
        self.timeout = timeout
        self._cap = body_cap
        self._agent = f"user-agent: {user_agent}\r\n"
        # Idle connections per (organization, target): an organization reuses only its own, so each one's
        # count of open connections is exact.
        self._idle: dict[tuple[str, tuple[str, str, int]], list[Connection]] = {}
        self._idle_since: dict[Connection, tuple[str, tuple[str, str, int]]] = {}  # oldest first
        self._open: dict[Connection, str] = {}  # -> the organization it counts for
        self.budget = ConnectionBudget(process_limit(max_connections), max_connections_per_organization,
                                       self._evict_idle)
        self._targets: dict[str, Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, headers: dict[str, str], body: bytes, organization: str = "") -> Answer:
        """Send one POST for ``organization`` and return its answer; raises ``TimeoutError`` (also when no
        connection was free in time), ``OSError``, ``DestinationRefused`` or ``HttpError``."""
        target = self._target(url)
        data = self._request(target, headers, body)
        key = (organization, target.key)
        connection: Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection, reused = await self._checkout(key, target)
                try:
                    answer = await connection.request(data)
                except OSError:
                    if not reused or connection.answered:
                        raise
                    # The receiver closed a kept-alive connection just as it was used: once more, fresh.
                    self._drop(connection)
                    connection = await self._connect(target, organization)
                    answer = await connection.request(data)
        except BaseException:
            if connection is not None:
                self._drop(connection)
            raise
        self._checkin(key, connection)
        return answer

    async def close(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()
        self._idle_since.clear()

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 10_000:  # URLs change with integrations; never grow without bound
                self._targets.clear()
            target = self._targets[url] = target_of(url)
        return target

    def _request(self, target: Target, headers: dict[str, str], body: bytes) -> bytes:
        lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
        text = "".join(lines)
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise HttpError("a request header contains a line break")  # never let a header split the request
        agent = "" if "user-agent" in headers else self._agent
        return b"".join((target.head, f"{agent}{text}content-length: {len(body)}\r\n\r\n".encode(), body))

    async def _checkout(self, key: tuple[str, tuple[str, str, int]], target: Target) -> tuple[Connection, bool]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_since.pop(connection, None)
            if connection.alive:
                return connection, True
            self._drop(connection)
        return await self._connect(target, key[0]), False

    def _checkin(self, key: tuple[str, tuple[str, str, int]], connection: Connection) -> None:
        if connection.alive and not self.budget.wanted(key[0]):
            self._idle.setdefault(key, []).append(connection)
            self._idle_since[connection] = key
        else:
            self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        """Close a connection (idempotent) and give its place back."""
        connection.close()
        organization = self._open.pop(connection, None)
        if organization is not None:
            self.budget.release(organization)

    def _evict_idle(self, organization: str | None) -> str | None:
        """Close the longest idle connection (of ``organization``, or of any), its place taken over by the budget."""
        found = next(((connection, key) for connection, key in self._idle_since.items()
                      if organization is None or key[0] == organization), None)
        if found is None:
            return None
        connection, key = found
        del self._idle_since[connection]
        self._idle[key].remove(connection)
        connection.close()
        return self._open.pop(connection, None)

    async def _connect(self, target: Target, organization: str) -> Connection:
        await self.budget.acquire(organization)
        try:
            connection = await self._open_connection(target)
        except BaseException:
            self.budget.release(organization)
            raise
        self._open[connection] = organization
        return connection

    async def _open_connection(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for family, address in await self._allowed_addresses(target):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
                _, connection = await loop.create_connection(
                    lambda: Connection(self._cap), sock=sock, ssl=self._tls_context() if target.tls else None,
                    server_hostname=target.host if target.tls else None)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return connection
        assert last is not None
        raise last

    async def _allowed_addresses(self, target: Target) -> list[tuple[int, tuple[str, int]]]:
        """Every address of the host, checked; ``DestinationRefused`` when the policy refuses them all, or
        when the name does not resolve (told apart, the two would say which internal names exist)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise unresolvable(target.host, exc) from exc
        # An IPv6 address may carry its zone ("fe80::1%eth0"); the policy judges the address itself.
        verdicts = [(family, address, self.policy.refusal(str(address[0]).split("%")[0]))
                    for family, _, _, _, address in infos]
        allowed = [(family, address) for family, address, reason in verdicts if reason is None]
        if not verdicts:
            raise unresolvable(target.host, OSError("no address"))
        if not allowed:
            _, address, reason = verdicts[0]
            raise all_refused(target.host, str(address[0]), reason or "")
        return allowed  # type: ignore[return-value]

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
