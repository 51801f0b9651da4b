"""Who is calling: the admin (a bearer token from settings) or an organization (an API key).

Keys are compared in constant time, and a request with a foreign key simply sees nothing:
every organization route filters by the key's organization, so another tenant's resource is
a 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import hmac
import logging
import time
from math import ceil

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from publisher.store import Store

log = logging.getLogger("walhook.api")

bearer = HTTPBearer(auto_error=False, description="the admin token, or an organization's API key (whk_...)")


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def source_of(request: Request) -> str:
    """The address a request came from (the proxy's, unless the server trusts its forwarded headers)."""
    return request.client.host if request.client else "unknown"


def blocked_seconds(request: Request) -> int:
    """How long the request's source must wait, having failed too often lately (``failures``); 0: it may try."""
    return ceil(request.app.state.auth_failures.wait_for(source_of(request), time.monotonic()))


def check_not_blocked(request: Request) -> None:
    """429 with the seconds to wait when the request's source failed too often lately."""
    if (wait := blocked_seconds(request)) > 0:
        raise HTTPException(429, f"too many failed authentications from this address; try again in {wait} s",
                            headers={"retry-after": str(wait)})


def note_failure(request: Request, what: str) -> None:
    """Count a failed authentication against its source, and log it for the operator."""
    source = source_of(request)
    request.app.state.auth_failures.failed(source, time.monotonic())
    log.warning("failed authentication (%s) from %s on %s %s", what, source, request.method, request.url.path)


def _unauthorized(request: Request, what: str) -> HTTPException:
    note_failure(request, what)
    return HTTPException(401, "missing or invalid credentials", headers={"www-authenticate": "Bearer"})


async def require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    check_not_blocked(request)
    token = request.app.state.settings.api.admin_token
    if token is None or credentials is None or not hmac.compare_digest(credentials.credentials.encode(),
                                                                       token.encode()):
        raise _unauthorized(request, "admin token")


async def organization(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    """The organization whose API key made the request."""
    check_not_blocked(request)
    if credentials is None:
        raise _unauthorized(request, "no API key")
    found = await store_of(request).organization_of_key(credentials.credentials)
    if found is None:
        raise _unauthorized(request, "API key")
    return found


async def admin_or_organization(request: Request,
                                credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
    """None for the admin token, else the organization whose API key made the request (401 for neither)."""
    check_not_blocked(request)
    token = request.app.state.settings.api.admin_token
    if token is not None and credentials is not None and hmac.compare_digest(credentials.credentials.encode(),
                                                                             token.encode()):
        return None
    return await organization(request, credentials)
