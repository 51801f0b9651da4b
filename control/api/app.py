"""The management API: one app factory, one lifespan that opens and closes every resource.

``create_app(settings)`` builds the app from settings (no module-level state, no environment
reads). The lifespan opens the store and the HTTP sender and closes them on shutdown.
walhook's own errors map to HTTP once, in ``control.api.problems`` (``NotFound`` 404, ``Conflict``
409, a refused destination or bad secret 422, the store being unavailable 503), and every API error
is answered here as RFC 9457 problem details; the portal's paths get its own pages instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException

from control.api import admin, backfills, health, portal_links, tenant
from control.api import status as operator_status
from control.api.failures import AuthFailures
from control.api.limits import BodyLimit, NoStore
from control.api.operator import OperatorSplit
from control.api.problems import KINDS, RESPONSES, THROTTLED, Kind, document, invalid, problem
from control.portal import routes as portal
from publisher.errors import Throttled
from publisher.sending.sender import WebhookSender, user_agent
from publisher.sending.ssrf import DestinationPolicy
from publisher.store import store_for

if TYPE_CHECKING:
    from models.settings import Settings

log = logging.getLogger("walhook.api")

def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings`` (needs ``[store]``; ``[kafka]`` and ``[source]`` enable replay and readiness)."""
    settings.require("store")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.store is not None
        policy = DestinationPolicy.from_strings(settings.publisher.allowed_networks)
        async with store_for(settings.store) as store, \
                WebhookSender.of(settings.publisher, policy) as sender:
            app.state.store, app.state.sender = store, sender
            yield

    app = FastAPI(title="walhook", version=user_agent().split("/", 1)[1], lifespan=lifespan,
                  description="Manage organizations, API keys, webhook integrations and deliveries.",
                  responses=RESPONSES)
    app.state.settings = settings
    app.state.auth_failures = AuthFailures(settings.api.auth_failures_per_minute)
    for router in (admin.router, tenant.router, portal_links.router, backfills.router, health.router,
                   operator_status.router):
        app.include_router(router)
    portal.install(app)
    for error, kind in KINDS:
        app.add_exception_handler(error, _handler(kind))
    app.add_exception_handler(Throttled, _throttled)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _crashed)
    document(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(NoStore)
    app.add_middleware(OperatorSplit, enabled=settings.api.operator_address is not None)
    return app


def _handler(kind: Kind):  # type: ignore[no-untyped-def]
    async def handle(request: Request, exc: Exception) -> Response:
        status, message = kind.status, str(printable(exc))
        if status >= 500:  # the store's trouble is logged for operators, not told to API clients
            log.error("%s %s: %s", request.method, request.url.path, exc)
            message = "the store is unavailable; try again"
        if portal.is_portal(request):  # the portal shows the same words on a page of its own
            return portal.error_page(request, status, message)
        return problem(status, message, kind)
    return handle


async def _throttled(request: Request, exc: Exception) -> Response:
    """429 with ``Retry-After``: an organization's manual actions are past a limit."""
    assert isinstance(exc, Throttled)
    response = await _handler(THROTTLED)(request, exc)
    response.headers["retry-after"] = str(exc.retry_after)
    return response


async def _invalid(request: Request, exc: Exception) -> Response:
    """A 422 naming each bad field. The errors' echo of the input (``input``, ``ctx``) is left out: a
    value such as NaN, 1e400 or a lone surrogate cannot be written as JSON, and the client sent it."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"type": e.get("type"), "loc": [printable(part) for part in e.get("loc", ())],
               "msg": printable(e.get("msg", ""))} for e in exc.errors()]
    if portal.is_portal(request):
        return portal.validation_page(request, errors)
    return invalid(errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and the auth's refusals (401, 404 of an unknown route, 405, 413, 429) as ``about:blank``."""
    assert isinstance(exc, HTTPException)
    if portal.is_portal(request):  # as before: the portal's own refusals are PortalDenied pages
        return await http_exception_handler(request, exc)
    return problem(exc.status_code, str(printable(exc.detail)), headers=exc.headers)


async def _crashed(request: Request, exc: Exception) -> Response:
    """A bug: a 500 the client can parse (the traceback goes to the server's log, not to the client)."""
    if portal.is_portal(request):
        return PlainTextResponse("Internal Server Error", status_code=500)
    return problem(500, "internal error; the API's log has the details")


def printable(value: object) -> str | int:
    """``value`` as JSON can carry it: an int as is, anything else as text without lone surrogates."""
    if isinstance(value, int):
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")

