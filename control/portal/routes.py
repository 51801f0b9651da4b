"""The portal's routes, listed explicitly, and how the API app takes them in.

``install(app)`` adds the portal's routers, its static files (htmx and the stylesheet, served
from the package: nothing comes from a CDN), its security headers, and the HTML error page
for refused portal requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from control.errors import PortalDenied, SignInNeeded
from control.portal import (
    pages_actions,
    pages_backfills,
    pages_catalogue,
    pages_conditions,
    pages_integrations,
    pages_jobs,
    pages_session,
)
from control.portal.render import PortalHeaders, is_fragment, page

# pages_conditions and the unsaved actions before pages_integrations: /integrations/only-when and
# /integrations/sample are not integration ids.
ROUTERS = (pages_session.router, pages_conditions.router, pages_actions.unsaved, pages_integrations.router,
           pages_actions.router,
           pages_jobs.router, pages_catalogue.router, pages_backfills.router)
STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the portal from ``app`` under ``/portal`` (unless ``[portal] enabled`` is false)."""
    settings = app.state.settings.portal
    if not settings.enabled:
        return
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/portal/static", StaticFiles(directory=STATIC), name="portal-static")
    app.add_exception_handler(PortalDenied, _denied)
    app.add_middleware(PortalHeaders, settings=settings)


def is_portal(request: Request) -> bool:
    return request.url.path.startswith("/portal")


def error_page(request: Request, status: int, message: str) -> Response:
    """A refusal as the portal shows it: a fragment for htmx, a page otherwise."""
    template = "fragments/error.html" if is_fragment(request) else "error.html"
    return page(request, template, status, message=message)


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PortalDenied)
    if isinstance(exc, SignInNeeded) and request.method == "GET":
        if not is_fragment(request):
            return RedirectResponse("/portal/login", status_code=303)
        # A fragment fetched on its own (a job's or backfill's progress, polled): the page
        # goes to sign-in rather than polling on with 401s. A POST keeps its page and form.
        response = error_page(request, exc.status, str(exc))
        response.headers["HX-Redirect"] = "/portal/login"
        return response
    return error_page(request, exc.status, str(exc))


def validation_page(request: Request, errors: list[dict[str, Any]]) -> Response:
    """A bad query or form field of a portal request, named in one line."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"][1:]) or "request"
    return error_page(request, 422, f"{where}: {first['msg']}")
