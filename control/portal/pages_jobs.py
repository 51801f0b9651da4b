"""Webhook jobs: the delivery log (filters, cursor paging), a job's page, redeliver, recover, replay.

The log reads one page of deliveries at a time (``limit`` rows, older pages by the id cursor)
through the same store call as ``GET /v1/deliveries``; an htmx request gets the table alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response

from control import actions
from control.actor import Capability
from control.api.schemas import UsageOut
from control.errors import PortalDenied
from control.portal.auth import Scope, scope, store_of
from control.portal.render import is_fragment, page
from models.events import parse_time
from models.samples import example_event, listed_for
from models.settings import EntitySettings
from publisher.sending.headers import hiding_custom_values

router = APIRouter(prefix="/portal/o/{organization_id}", include_in_schema=False, dependencies=[Depends(scope)])
PAGE_SIZE = 50
FILTERS = ("status", "entity_key", "operation", "entity_path", "integration_id", "since", "until")


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise PortalDenied(422, f"{name}: {exc}") from exc


@router.get("/jobs")
async def jobs(request: Request, granted: Scope = Depends(scope),
               status: str = Query("", pattern="^(|pending|succeeded|failed)$"),
               entity_key: str = Query("", max_length=200), operation: str = Query(
                   "", pattern="^(|created|updated|deleted|read)$"), entity_path: str = Query("", max_length=2000),
               integration_id: str = Query("", pattern=r"^\d{0,18}$"), since: str = Query("", max_length=40),
               until: str = Query("", max_length=40), cursor: int | None = Query(None, ge=1)) -> Response:
    store, org = store_of(request), granted.organization_id
    rows = await store.deliveries(int(integration_id) if integration_id else None, status or None, PAGE_SIZE,
                                  organization_id=org, entity_key=entity_key or None, operation=operation or None,
                                  entity_path=entity_path or None, since=_time(since, "since"),
                                  until=_time(until, "until"), before_id=cursor)
    chosen = {"status": status, "entity_key": entity_key, "operation": operation, "entity_path": entity_path,
              "integration_id": integration_id, "since": since, "until": until}
    integrations = await store.integrations_of(org, include_disabled=True)
    context: dict[str, Any] = {"scope": granted, "rows": rows, "filters": chosen,
                               "next_cursor": rows[-1].id if len(rows) == PAGE_SIZE else None,
                               "query": "&".join(f"{k}={v}" for k, v in chosen.items() if v),
                               "integration_of": {integration.id: integration for integration in integrations}}
    if is_fragment(request):
        return page(request, "fragments/jobs_table.html", **context)
    context["integrations"] = integrations
    context["usage"] = UsageOut.of(await store.usage(org), request.app.state.settings.api)
    context["entity_keys"] = [e.entity_key for e in request.app.state.settings.entities]
    context["path_example"] = path_example(request.app.state.settings.entities, org)
    return page(request, "jobs.html", **context)


def path_example(entities: list[EntitySettings], organization_id: str) -> str:
    """An entity path as this deployment writes them (its first entity's example event), for the filter's
    placeholder; empty when no entity is configured."""
    listed = listed_for(entities, organization_id)
    return str(example_event(listed[0], "created", organization_id)["entityPath"]) if listed else ""


@router.get("/jobs/{delivery_id}")
async def job(request: Request, delivery_id: int, granted: Scope = Depends(scope)) -> Response:
    store = store_of(request)
    delivery = await store.delivery_of(granted.organization_id, delivery_id)
    attempts = await store.attempts_of(delivery_id)
    if not granted.can(Capability.MANAGE):  # attempts logged before values were hidden in the log itself
        attempts = [replace(a, request_headers=hiding_custom_values(a.request_headers)) for a in attempts]
    named = {i.id: i for i in await store.integrations_of(granted.organization_id, include_disabled=True)}
    return page(request, "job.html", scope=granted, delivery=delivery, attempts=attempts,
                integration=named.get(delivery.integration_id),
                body=(await store.delivery_body(delivery_id)).decode("utf-8", "replace"))


@router.post("/jobs/{delivery_id}/redeliver")
async def redeliver(request: Request, delivery_id: int,
                    granted: Scope = Depends(scope)) -> Response:
    scheduled = await actions.redeliver(store_of(request), request.app.state.settings.api, granted.actor,
                                        delivery_id)
    return page(request, "fragments/scheduled.html", what="redelivery", scheduled=[scheduled])


@router.post("/integrations/{integration_id}/recover")
async def recover(request: Request, integration_id: int, granted: Scope = Depends(scope),
                  since: str = Form(max_length=40)) -> Response:
    moment = _time(since, "since")
    if moment is None:
        raise PortalDenied(422, "since: give the time from which failed deliveries are tried again")
    scheduled = await actions.recover(store_of(request), request.app.state.settings.api, granted.actor,
                                      integration_id, moment)
    return page(request, "fragments/scheduled.html", what=f"failed since {moment:%Y-%m-%d %H:%M} UTC",
                scheduled=scheduled)


@router.post("/integrations/{integration_id}/replay")
async def replay(request: Request, integration_id: int, granted: Scope = Depends(scope),
                 offset: str = Form("", pattern=r"^\d{0,18}$"), since: str = Form("", max_length=40)) -> Response:
    """Start a replay job (a running publisher carries it out); its fragment follows the progress."""
    job = await actions.start_replay(store_of(request), request.app.state.settings.api, granted.actor,
                                     integration_id, offset=int(offset) if offset else None,
                                     since=_time(since, "since"))
    return page(request, "fragments/replay_job.html", scope=granted, job=job)


@router.get("/replay-jobs/{job_id}")
async def replay_job(request: Request, job_id: int, granted: Scope = Depends(scope)) -> Response:
    job = await store_of(request).replay_job(granted.organization_id, job_id)
    return page(request, "fragments/replay_job.html", scope=granted, job=job)


@router.post("/replay-jobs/{job_id}/cancel")
async def cancel_replay_job(request: Request, job_id: int, granted: Scope = Depends(scope)) -> Response:
    job = await actions.cancel_replay(store_of(request), granted.actor, job_id)
    return page(request, "fragments/replay_job.html", scope=granted, job=job)
