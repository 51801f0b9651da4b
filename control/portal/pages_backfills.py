"""Backfills: an organization's list with live progress, the start form, pause / resume / cancel.

The start form is checked by the API's request model and started by the same call as
``POST /v1/backfills`` (``start_organization_backfill``), so a refusal - an unknown column, a
table without a key, a second backfill of the same table and target - reads as the API's words,
shown under the form. The list is a fragment that polls itself every 2 s while a backfill of
the organization runs, and stops once none does. Every backfill id goes through the store
with the organization, so another organization's is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from cdc.errors import BackfillRefused
from control import actions
from control.api.schemas import BackfillIn
from control.portal.auth import Scope, scope, store_of
from control.portal.render import is_fragment, page
from models.errors import Conflict

router = APIRouter(prefix="/portal/o/{organization_id}", include_in_schema=False, dependencies=[Depends(scope)])
LISTED = 50
POLL_SECONDS = 2
ALL_SUBSCRIBERS = "all"
_ACTION = Path(pattern="^(pause|resume|cancel)$")


def read_start_form(entity_key: str, target: str, row_filter: str) -> tuple[BackfillIn | None, str | None]:
    """The form as the API's request, or the one line saying what is wrong with it."""
    target = target.strip()
    if target not in ("", ALL_SUBSCRIBERS) and not target.isdigit():
        return None, f"target: choose every subscriber or one of the integrations, not {target!r}"
    body = {"entity_key": entity_key.strip(), "filter": row_filter.strip() or None,
            "integration_id": int(target) if target.isdigit() else None}
    try:
        return BackfillIn.model_validate(body), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "backfill"
        return None, f"{where}: {first['msg']}"


async def _listing(request: Request, granted: Scope, list_error: str | None = None) -> dict[str, Any]:
    """What the list shows: the jobs (each with its entity key and target's name), and whether to keep polling."""
    store, org = store_of(request), granted.organization_id
    integrations = await store.integrations_of(org, include_disabled=True)
    jobs = await store.backfills(org, None, LISTED)
    return {"scope": granted, "backfills": jobs, "integrations": integrations,
            "names": {integration.id: integration.name for integration in integrations},
            "entity_of": {entity.table: entity.entity_key for entity in request.app.state.settings.entities},
            "polling": any(job.state == "running" for job in jobs), "poll_seconds": POLL_SECONDS,
            "list_error": list_error}


async def _page(request: Request, granted: Scope, status: int = 200, list_error: str | None = None,
                **form: Any) -> Response:
    keys = [entity.entity_key for entity in request.app.state.settings.entities]
    return page(request, "backfills.html", status, entity_keys=keys,
                form={"entity_key": "", "target": ALL_SUBSCRIBERS, "filter": "", "error": None, **form},
                **await _listing(request, granted, list_error))


@router.get("/backfills")
async def backfills(request: Request, granted: Scope = Depends(scope),
                    integration_id: str = Query("", pattern=r"^\d{0,18}$")) -> Response:
    """The page (the start form's target preselected with ``?integration_id=``), or the list alone for htmx."""
    if is_fragment(request):
        return page(request, "fragments/backfills_table.html", **await _listing(request, granted))
    return await _page(request, granted, target=integration_id or ALL_SUBSCRIBERS)


@router.post("/backfills")
async def start(request: Request, granted: Scope = Depends(scope), entity_key: str = Form("", max_length=200),
                target: str = Form(ALL_SUBSCRIBERS, max_length=20),
                row_filter: str = Form("", alias="filter", max_length=4000)) -> Response:
    """Start a backfill; refused, the form comes back with the reason under it."""
    typed = {"entity_key": entity_key, "target": target, "filter": row_filter}
    body, error = read_start_form(entity_key, target, row_filter)
    if body is None:
        return await _page(request, granted, 422, error=error, **typed)
    settings, org = request.app.state.settings, granted.organization_id
    try:
        job = await actions.start_backfill(store_of(request), settings.entities, settings.source, granted.actor,
                                           entity_key=body.entity_key, integration_id=body.integration_id,
                                           row_filter=body.filter)
    except (BackfillRefused, Conflict) as exc:
        return await _page(request, granted, 409 if isinstance(exc, Conflict) else 422, error=str(exc), **typed)
    return RedirectResponse(f"/portal/o/{org}/backfills?started={job.id}", status_code=303)


@router.post("/backfills/{backfill_id}/{action}")
async def change(request: Request, backfill_id: int, action: str = _ACTION,
                 granted: Scope = Depends(scope)) -> Response:
    """Pause, resume or cancel; htmx gets the list back, a plain form post the page."""
    error = None
    try:
        await actions.change_backfill(store_of(request), granted.actor, backfill_id, action)
    except Conflict as exc:  # the job moved on since the page was drawn (it ended, say): said in the list
        error = str(exc)
    if is_fragment(request):
        return page(request, "fragments/backfills_table.html", **await _listing(request, granted, error))
    if error is not None:
        return await _page(request, granted, 409, list_error=error)
    return RedirectResponse(f"/portal/o/{granted.organization_id}/backfills", status_code=303)
