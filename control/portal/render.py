"""Rendering: the Jinja2 environment, the pages' shared context, and the portal's security headers.

Templates autoescape everything. Pages carry no inline script or style: the Content-Security-
Policy allows scripts and styles from the portal's own origin only (htmx and a few lines of
``portal.js``), and the accent colour arrives through ``/portal/theme.css``. ``frame-ancestors``
is ``[portal] frame_ancestors``, or ``'none'`` when no origin may embed the portal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.actor import Capability
from models.settings import PortalSettings

HTMX_VERSION = "2.0.11"

environment = Environment(loader=PackageLoader("control.portal", "templates"),
                          autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    """JSON for reading: a text body is parsed first, and shown as it is when it is not JSON."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


environment.filters["when"] = _when
environment.filters["pretty"] = _pretty
environment.globals["Capability"] = Capability


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the branding, the htmx version and ``context``."""
    settings: PortalSettings = request.app.state.settings.portal
    html = environment.get_template(template).render(
        request=request, portal=settings, htmx_version=HTMX_VERSION, response_status=status, **context)
    return HTMLResponse(html, status_code=status)


def is_fragment(request: Request) -> bool:
    """True for an htmx request (it swaps part of a page), which gets a fragment instead of a page."""
    return request.headers.get("hx-request") == "true"


def content_security_policy(settings: PortalSettings) -> str:
    images = ["'self'", "data:"]
    if settings.logo_url and settings.logo_url.startswith("http"):
        parts = urlsplit(settings.logo_url)
        images.append(f"{parts.scheme}://{parts.netloc}")
    ancestors = " ".join(settings.frame_ancestors) or "'none'"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src " + " ".join(images) +
            "; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors " + ancestors)


class PortalHeaders:
    """Adds the CSP and the other protective headers to every response under ``/portal``."""

    def __init__(self, app: ASGIApp, settings: PortalSettings) -> None:
        self.app = app
        self.headers = [(b"content-security-policy", content_security_policy(settings).encode()),
                        (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"cross-origin-opener-policy", b"same-origin")]
        if not settings.frame_ancestors:
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/portal"):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/portal/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = self.headers if static else [*self.headers, (b"cache-control", b"no-store")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
