"""Who is looking at the portal, and what they may see: the session cookie, the scope, CSRF.

Every organization page, fragment and form sits under ``/portal/o/{organization}`` and depends
on :func:`scope`. An organization's session sees that organization only: any other one is a
404, exactly like a foreign id through the API. An operator (signed in with the admin token)
may open any organization that exists. Every POST must carry the session's CSRF token, as the
``csrf`` form field or the ``x-csrf-token`` header that htmx sends.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.responses import Response

from control.actor import Actor, Capability
from control.api.admin import OrganizationId
from control.errors import PortalDenied, SignInNeeded
from control.portal.access import PortalSession, current
from models.errors import NotFound
from publisher.store import Store

COOKIE = "walhook_portal"
FORM_COOKIE = "walhook_portal_form"  # double-submit token of the forms used before a session exists


@dataclass(frozen=True)
class Scope:
    """The organization a request acts on, and the session acting."""

    organization_id: str
    session: PortalSession

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    def can(self, capability: Capability) -> bool:
        return self.session.can(capability)

    @property
    def actor(self) -> Actor:
        """Who acts, for ``control.actions``: this organization, with what the session's link granted."""
        return Actor(self.organization_id, self.session.capabilities)


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def cookie_of(request: Request, name: str) -> tuple[str, str]:
    """A portal cookie's name and path. Over TLS it carries the ``__Host-`` prefix (Secure, Path=/, no
    Domain), so that no other host or path of the site can set or shadow it; over plain HTTP (local
    use) browsers refuse that prefix, so it goes as is, under ``/portal``."""
    return (f"__Host-{name}", "/") if request.url.scheme == "https" else (name, "/portal")


def read_cookie(request: Request, name: str) -> str | None:
    return request.cookies.get(cookie_of(request, name)[0])


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """Set a portal cookie: HttpOnly, SameSite=Strict, Secure over TLS."""
    cookie, path = cookie_of(request, name)
    response.set_cookie(cookie, value, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path=path, max_age=max_age)


async def current_session(request: Request) -> PortalSession | None:
    return await current(store_of(request), read_cookie(request, COOKIE))


async def signed_in(request: Request) -> PortalSession:
    session = await current_session(request)
    if session is None:
        raise SignInNeeded()
    await check_csrf(request, session.csrf_token)
    return session


async def check_csrf(request: Request, expected: str) -> None:
    """Refuse a state-changing request whose CSRF token is missing or wrong (compared in constant time)."""
    if request.method in ("GET", "HEAD"):
        return
    presented = request.headers.get("x-csrf-token")
    if presented is None:
        presented = str((await request.form()).get("csrf", ""))
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise PortalDenied(403, "the form's CSRF token is missing or wrong; reload the page and try again")


async def scope(request: Request, organization_id: str = OrganizationId,
                session: PortalSession = Depends(signed_in)) -> Scope:
    """The organization of the URL, if this session may see it; anything else is a 404."""
    if session.operator:
        if not await store_of(request).organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
    elif session.organization_id != organization_id:
        raise NotFound(f"organization {organization_id!r} does not exist")
    return Scope(organization_id, session)


def allowed(capability: Capability):  # type: ignore[no-untyped-def]
    """A dependency refusing (403) a session whose link did not grant ``capability``."""
    async def check(granted: Scope = Depends(scope)) -> Scope:
        if not granted.can(capability):
            raise PortalDenied(403, f"this portal session may not do that (it lacks {capability.value!r})")
        return granted
    return check


async def operator(session: PortalSession = Depends(signed_in)) -> PortalSession:
    if not session.operator:
        raise NotFound("not found")
    return session


can_manage = allowed(Capability.MANAGE)
can_use_secrets = allowed(Capability.SECRETS)
can_recover = allowed(Capability.RECOVER)
