"""The management API: one app factory, one lifespan that opens and closes every resource.

``create_app(settings)`` builds the app from settings (no module-level state, no environment
reads). The lifespan opens the store and the HTTP sender and closes them on shutdown.
walhook's own errors map to HTTP once, here: ``NotFound`` 404, ``Conflict`` 409, a refused
destination or bad secret 422, the store being unavailable 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from cdc.errors import BackfillRefused
from control.api import admin, backfills, health, portal_links, tenant
from control.api import status as operator_status
from control.api.failures import AuthFailures
from control.api.limits import BodyLimit, NoStore
from control.api.operator import OperatorSplit
from control.errors import Forbidden, LinkRefused
from control.portal import routes as portal
from models.errors import Conflict, NotFound, SecretError, StoreError
from publisher.errors import JobRefused, SubscriptionError, Throttled
from publisher.sending.sender import WebhookSender, user_agent
from publisher.sending.ssrf import DestinationPolicy, DestinationRefused
from publisher.store import store_for

if TYPE_CHECKING:
    from models.settings import Settings

log = logging.getLogger("walhook.api")

_STATUS = [(NotFound, 404), (Conflict, 409), (DestinationRefused, 422), (SecretError, 422),
           (SubscriptionError, 422), (JobRefused, 422), (LinkRefused, 422), (BackfillRefused, 422), (Forbidden, 403),
           (StoreError, 503)]


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
                  description="Manage organizations, API keys, webhook integrations and deliveries.")
    app.state.settings = settings
    app.state.auth_failures = AuthFailures(settings.api.auth_failures_per_minute)
    for router in (admin.router, tenant.router, portal_links.router, backfills.router, health.router,
                   operator_status.router):
        app.include_router(router)
    portal.install(app)
    for error, status in _STATUS:
        app.add_exception_handler(error, _handler(status))
    app.add_exception_handler(Throttled, _throttled)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(NoStore)
    app.add_middleware(OperatorSplit, enabled=settings.api.operator_address is not None)
    return app


def _handler(status: int):  # type: ignore[no-untyped-def]
    async def handle(request: Request, exc: Exception) -> Response:
        message = str(printable(exc))
        if status >= 500:  # the store's trouble is logged for operators, not told to API clients
            log.error("%s %s: %s", request.method, request.url.path, exc)
            message = "the store is unavailable; try again"
        if portal.is_portal(request):  # the portal shows the same words on a page of its own
            return portal.error_page(request, status, message)
        return JSONResponse({"detail": message}, status_code=status)
    return handle


async def _throttled(request: Request, exc: Exception) -> Response:
    """429 with ``Retry-After``: an organization's manual actions are past a limit."""
    assert isinstance(exc, Throttled)
    response = await _handler(429)(request, exc)
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
    return JSONResponse({"detail": errors}, status_code=422)


def printable(value: object) -> str | int:
    """``value`` as JSON can carry it: an int as is, anything else as text without lone surrogates."""
    if isinstance(value, int):
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")

