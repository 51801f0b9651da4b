"""Who is calling: the admin (a bearer token from settings) or an organization (an API key).

Keys are compared in constant time, and a request with a foreign key simply sees nothing:
every organization route filters by the key's organization, so another tenant's resource is
a 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from publisher.store import Store

bearer = HTTPBearer(auto_error=False, description="the admin token, or an organization's API key (whk_...)")


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _unauthorized() -> HTTPException:
    return HTTPException(401, "missing or invalid credentials", headers={"www-authenticate": "Bearer"})


async def require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    token = request.app.state.settings.api.admin_token
    if token is None or credentials is None or not hmac.compare_digest(credentials.credentials.encode(),
                                                                       token.encode()):
        raise _unauthorized()


async def organization(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    """The organization whose API key made the request."""
    if credentials is None:
        raise _unauthorized()
    found = await store_of(request).organization_of_key(credentials.credentials)
    if found is None:
        raise _unauthorized()
    return found
