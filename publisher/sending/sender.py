"""One webhook attempt over HTTP: sign, POST, read a capped response, report what happened.

Redirects are not followed (a 3xx is a failed attempt), connections are kept alive and
reused, and every attempt has a total timeout (connecting, sending and reading the answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import metadata

from models.settings import PublisherSettings
from publisher.errors import HttpError
from publisher.sending.headers import without_reserved
from publisher.sending.http import HttpClient
from publisher.sending.signing import webhook_headers
from publisher.sending.ssrf import DestinationPolicy, DestinationRefused

RESPONSE_BODY_CAP = 16 * 1024


def user_agent() -> str:
    """``walhook/<version>``, the installed distribution's version (the delivery engine does not import the CLI)."""
    try:
        return f"walhook/{metadata.version('walhook')}"
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "walhook"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: int | None
    duration: float
    error: str | None = None
    response_body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # response headers, lower-case names
    request_headers: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else (self.error or "no response")


class WebhookSender:
    """Sends signed POSTs over pooled, kept-alive connections (``publisher.sending.http``). ``open`` / ``close``
    are idempotent.

    Every destination passes the SSRF policy twice: the URL before the request (IP literals,
    schemes, credentials) and each resolved address when a connection is opened, so a name that
    resolves to a private address is refused on the address actually used.
    """

    def __init__(self, timeout: float = 15.0, policy: DestinationPolicy | None = None, *,
                 max_connections: int = 1024, max_connections_per_organization: int = 256) -> None:
        self._timeout = timeout
        # Open connections are capped per process and per organization, shared fairly
        # (``publisher.sending.connections``); the lanes bound the requests in flight per integration.
        self._limits = (max_connections, max_connections_per_organization)
        self.policy = policy or DestinationPolicy()
        self._client: HttpClient | None = None
        # (policy, URL) pairs that passed the URL check: it is a pure function of the two.
        self._allowed_urls: set[tuple[DestinationPolicy, str]] = set()

    @classmethod
    def of(cls, settings: PublisherSettings, policy: DestinationPolicy) -> WebhookSender:
        """The sender a process opens, from its ``[publisher]`` settings."""
        return cls(settings.request_timeout, policy, max_connections=settings.max_connections,
                   max_connections_per_organization=settings.max_connections_per_organization)

    async def open(self) -> None:
        if self._client is None:
            self._client = HttpClient(self.policy, self._timeout, RESPONSE_BODY_CAP, user_agent(), *self._limits)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> WebhookSender:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def attempt(self, url: str, secrets: list[str], msg_id: str, body: bytes,
                      extra_headers: dict[str, str] | None = None, organization: str = "") -> AttemptResult:
        """POST ``body`` to ``url`` signed with every secret in ``secrets``, on ``organization``'s share of
        the connections; never raises for HTTP trouble."""
        assert self._client is not None, "WebhookSender.open() first"
        headers = {"content-type": "application/json", **without_reserved(extra_headers or {}),
                   **webhook_headers(secrets, msg_id, int(time.time()), body)}
        started = time.perf_counter()
        try:
            if (self.policy, url) not in self._allowed_urls:
                self.policy.check_url(url)
                self._allowed_urls.add((self.policy, url))
            status, received, content = await self._client.post(url, headers, body, organization)
            return AttemptResult(status, time.perf_counter() - started, None, content, received, headers)
        except TimeoutError:
            return AttemptResult(None, time.perf_counter() - started, f"timed out after {self._timeout:g}s",
                                 request_headers=headers)
        except DestinationRefused as exc:
            return AttemptResult(None, time.perf_counter() - started, f"refused by the SSRF policy: {exc}",
                                 request_headers=headers)
        except (HttpError, OSError) as exc:
            return AttemptResult(None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}",
                                 request_headers=headers)
