"""Getting in and out: the operator's sign-in, opening a portal link, signing out, the operator's list.

A portal link is opened in two steps: ``GET /portal/link/{token}`` shows a button and spends
nothing (mail scanners and link previews fetch URLs), the button's POST spends the token and
sets the session cookie, then redirects to a URL without the token. The two forms used before a
session exists carry a double-submit token (a SameSite=Strict cookie and the same value in
the form), so another site cannot post them.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from secrets import token_urlsafe

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from control.actor import ALL_CAPABILITIES
from control.api.admin import OrganizationId
from control.api.auth import blocked_seconds, note_failure
from control.errors import LinkRefused, PortalDenied
from control.portal import access
from control.portal.access import PortalSession
from control.portal.auth import (
    COOKIE,
    FORM_COOKIE,
    cookie_of,
    current_session,
    operator,
    read_cookie,
    set_cookie,
    store_of,
)
from control.portal.links import capabilities_of
from control.portal.render import page

router = APIRouter(prefix="/portal", include_in_schema=False)
ORGANIZATIONS_PAGE = 50


def _with_form_token(request: Request, template: str, status: int = 200, **context: object) -> Response:
    """A pre-session form page, with its double-submit token in a cookie and in the form."""
    token = read_cookie(request, FORM_COOKIE) or token_urlsafe(24)
    response = page(request, template, status, form_token=token, **context)
    set_cookie(request, response, FORM_COOKIE, token)
    return response


def _check_form_token(request: Request, presented: str) -> None:
    expected = read_cookie(request, FORM_COOKIE) or ""
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise PortalDenied(403, "the form's CSRF token is missing or wrong; reload the page and try again")


def _signed_in(request: Request, cookie: str, session: PortalSession) -> Response:
    target = "/portal/orgs" if session.operator else f"/portal/o/{session.organization_id}/integrations"
    response = RedirectResponse(target, status_code=303)
    lasting = timedelta(hours=request.app.state.settings.portal.session_hours)
    set_cookie(request, response, COOKIE, cookie, max_age=int(lasting.total_seconds()))
    return response


@router.get("")
async def home(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return RedirectResponse("/portal/login", status_code=303)
    return RedirectResponse("/portal/orgs" if session.operator else
                            f"/portal/o/{session.organization_id}/integrations", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _with_form_token(request, "login.html")


@router.post("/login")
async def login(request: Request, token: str = Form(max_length=500), form_token: str = Form("")) -> Response:
    _check_form_token(request, form_token)
    if (wait := blocked_seconds(request)) > 0:
        response = _with_form_token(request, "login.html", 429, error=f"too many failed sign-ins from this "
                                    f"address; try again in {wait} s")
        response.headers["retry-after"] = str(wait)
        return response
    admin_token = request.app.state.settings.api.admin_token
    if admin_token is None or not hmac.compare_digest(token.encode(), admin_token.encode()):
        note_failure(request, "portal sign-in")
        return _with_form_token(request, "login.html", 401, error="that is not the admin token")
    cookie, session = await access.operator_session(store_of(request), request.app.state.settings.portal)
    return _signed_in(request, cookie, session)


@router.get("/link/{token}")
async def link_page(request: Request, token: str) -> Response:
    return _with_form_token(request, "link.html", token=token)


@router.post("/link/{token}")
async def open_link(request: Request, token: str, form_token: str = Form("")) -> Response:
    _check_form_token(request, form_token)
    try:
        cookie, session = await access.exchange(store_of(request), request.app.state.settings.portal, token)
    except LinkRefused as exc:
        return page(request, "error.html", 403, message=str(exc))
    return _signed_in(request, cookie, session)


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("")) -> Response:
    """End the session. An operator goes back to the sign-in page; an organization's user, who came
    through a portal link and has no admin token, is told to ask for a new link instead."""
    session = await current_session(request)
    if session is not None and hmac.compare_digest(csrf.encode(), session.csrf_token.encode()):
        await store_of(request).end_portal_session(read_cookie(request, COOKIE) or "")
    response: Response = RedirectResponse("/portal/login", status_code=303)
    if session is not None and not session.operator:
        response = page(request, "signed_out.html", organization_id=session.organization_id)
    name, path = cookie_of(request, COOKIE)
    response.delete_cookie(name, path=path, secure=request.url.scheme == "https", httponly=True, samesite="strict")
    return response


@router.get("/orgs")
async def organizations(request: Request, session: PortalSession = Depends(operator),
                        after: str | None = Query(None, max_length=200)) -> Response:
    """The operator's list, a page at a time."""
    found = await store_of(request).organizations(after, ORGANIZATIONS_PAGE)
    return page(request, "orgs.html", session=session, organizations=found, capabilities=ALL_CAPABILITIES,
                next_after=found[-1].id if len(found) == ORGANIZATIONS_PAGE else None)


@router.post("/orgs/{organization_id}/links")
async def create_link(request: Request, organization_id: str = OrganizationId,
                      session: PortalSession = Depends(operator), expiry_hours: float = Form(1.0, gt=0, le=24),
                      session_id: str = Form("", max_length=200, pattern=r"^[A-Za-z0-9_.:-]*$")) -> Response:
    """The operator's "create portal link" button: a link for one organization, shown once."""
    granted = capabilities_of([str(c) for c in (await request.form()).getlist("capabilities")])
    issued = await access.create_link(store_of(request), request.app.state.settings.portal, str(request.base_url),
                                      organization_id, granted, timedelta(hours=expiry_hours), session_id or None)
    return page(request, "fragments/link_created.html", organization_id=organization_id, link=issued)


@router.get("/theme.css")
async def theme(request: Request) -> Response:
    accent = request.app.state.settings.portal.accent_color
    return Response(f":root {{ --accent: {accent}; }}\n", media_type="text/css")
