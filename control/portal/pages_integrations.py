"""Integrations: the list (with 24-hour numbers, the chart and the backlog), add, edit, enable, disable.

Every route depends on :func:`control.portal.auth.scope`, so an integration id of another
organization is a 404 here as it is in the API. Writes go through the same store calls and the
same SSRF check as ``POST`` / ``PATCH /v1/integrations``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from control import actions
from control.actor import Capability
from control.api.schemas import IntegrationIn, IntegrationOut, items_of
from control.columns import checked_subscriptions
from control.errors import Forbidden
from control.portal.auth import Scope, can_manage, scope, store_of
from control.portal.condition_rows import EntityRows
from control.portal.forms import IntegrationForm, form_of, place_error, read_form
from control.portal.pages_conditions import kinds_of, properties_of, shapes_of
from control.portal.render import page
from models.samples import EVENT_OPERATIONS, SAMPLE_OPERATIONS
from publisher.errors import SubscriptionError
from publisher.sending.headers import hiding_custom_values
from publisher.sending.ssrf import DestinationRefused
from publisher.store import Integration
from publisher.store.rows import HourCounts

router = APIRouter(prefix="/portal/o/{organization_id}", include_in_schema=False, dependencies=[Depends(scope)])
STATUS_COLOURS = {"succeeded": "ok", "failed": "bad", "pending": "wait"}


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    status: str
    label: str


def bars(hours: list[HourCounts], height: float = 80.0, width: int = 12) -> list[Bar]:
    """Stacked bars per hour (succeeded at the bottom), scaled to the busiest hour."""
    top = max((sum(h.counts.values()) for h in hours), default=0) or 1
    drawn: list[Bar] = []
    for index, hour in enumerate(hours):
        y = height
        for status in ("succeeded", "failed", "pending"):
            n = hour.counts.get(status, 0)
            if n:
                size = height * n / top
                y -= size
                drawn.append(Bar(index * width, y, size, STATUS_COLOURS[status],
                                 f"{hour.start:%H}:00 UTC: {n} {status}"))
    return drawn


def entity_keys(request: Request) -> list[str]:
    return [entity.entity_key for entity in request.app.state.settings.entities]


def raw_json(integration: Integration, header_values: bool = True) -> str:
    """The integration exactly as ``GET /v1/integrations/{id}`` returns it (its custom headers' values
    hidden unless ``header_values``: a session that may not manage it does not see them)."""
    if not header_values:
        integration = replace(integration, headers=hiding_custom_values(integration.headers))
    return orjson.dumps(IntegrationOut.of(integration.describe()).model_dump(mode="json"),
                        option=orjson.OPT_INDENT_2).decode()


@router.get("/integrations")
async def list_integrations(request: Request, granted: Scope = Depends(scope)) -> Response:
    store, org = store_of(request), granted.organization_id
    hours = await store.hourly_deliveries(org)
    return page(request, "integrations.html", scope=granted, integrations=await store.integrations_of(
        org, include_disabled=True), stats=await store.integration_figures(org), bars=bars(hours),
        hours=hours, backlog=await store.backlog_of(org))


async def _edit(request: Request, granted: Scope, form: IntegrationForm, integration: Integration | None,
                status: int = 200) -> Response:
    jobs = await store_of(request).replay_jobs(granted.organization_id, integration.id, limit=3) if integration else []
    return page(request, "integration_edit.html", status, scope=granted, form=form, integration=integration,
                entity_keys=entity_keys(request), operations=SAMPLE_OPERATIONS, sample_operations=EVENT_OPERATIONS,
                raw=raw_json(integration, granted.can(Capability.MANAGE)) if integration else None, jobs=jobs,
                entity_properties=properties_of(await shapes_of(request)), no_rows=EntityRows())


@router.get("/integrations/new")
async def new_integration(request: Request, granted: Scope = Depends(can_manage)) -> Response:
    return await _edit(request, granted, IntegrationForm({"ordering": "entity", "batch_size": "1"}), None)


async def _refused(request: Request, form: IntegrationForm, body: IntegrationIn | None) -> bool:
    """Run the API's checks (known entity keys, conditions, SSRF); True, with the reason on its field, when it
    cannot be saved."""
    if body is not None:
        settings = request.app.state.settings
        try:
            await checked_subscriptions(items_of(body.events), settings.entities,
                                        settings.source.dsn if settings.source is not None else None)
        except SubscriptionError as exc:
            form.errors["events"] = str(exc)
            place_error(form)  # a condition the rows made: shown next to them
        try:
            await request.app.state.sender.policy.check_destination(body.url)
        except DestinationRefused as exc:
            form.errors["url"] = str(exc)
    return body is None or bool(form.errors)


@router.post("/integrations")
async def create_integration(request: Request, granted: Scope = Depends(scope)) -> Response:
    form, body = read_form(await request.form(), kinds_of(await shapes_of(request)))
    if await _refused(request, form, body) or body is None:
        return await _edit(request, granted, form, None, 422)
    try:
        integration_id = await actions.create_integration(
            store_of(request), request.app.state.settings.api, granted.actor, granted.organization_id, body.url,
            items_of(body.events), body.name or "", secret=_typed_secret(form), environment=body.environment,
            ordering=body.ordering or "entity", batch_size=body.batch_size or 1, rate_limit=body.rate_limit,
            headers=body.headers, concurrency=body.concurrency, send_traceparent=bool(body.send_traceparent))
    except Forbidden as exc:
        return await _forbidden(request, granted, form, None, exc)
    return RedirectResponse(f"/portal/o/{granted.organization_id}/integrations/{integration_id}?saved=1",
                            status_code=303)


def _typed_secret(form: IntegrationForm) -> str | None:
    return form.values.get("secret", "").strip() or None


async def _forbidden(request: Request, granted: Scope, form: IntegrationForm, integration: Integration | None,
                     exc: Forbidden) -> Response:
    """A refused save keeps the form as typed; a refused secret says why next to its field."""
    if _typed_secret(form) is None:
        raise exc
    form.errors["secret"] = str(exc)
    return await _edit(request, granted, form, integration, 403)


def preview_json(body: IntegrationIn, saved: Integration | None) -> str:
    """The integration as the API would show it once this form is saved (``id`` null while it is new)."""
    shown: dict[str, object] = {"id": None, "enabled": True, "disabled_reason": None, "catching_up": False}
    if saved is not None:
        shown = IntegrationOut.of(saved.describe()).model_dump(mode="json")
    changes = body.model_dump(mode="json")
    shown.update({**changes, "name": body.name or body.url, "headers": changes["headers"] or {}})
    return orjson.dumps({name: shown.get(name) for name in IntegrationOut.model_fields},
                        option=orjson.OPT_INDENT_2).decode()


# Declared before /integrations/{integration_id}, which would otherwise take "preview" for an id.
@router.post("/integrations/preview")
async def preview(request: Request, granted: Scope = Depends(scope),
                  integration_id: str = Form("", pattern=r"^\d{0,18}$")) -> Response:
    """The RAW JSON box, refreshed as the form changes: the API's view of the typed values, or their errors."""
    saved = await store_of(request).integration_of(granted.organization_id, int(integration_id)) \
        if integration_id else None
    form, body = read_form(await request.form(), kinds_of(await shapes_of(request)))
    if body is None or form.errors:
        return Response(orjson.dumps({"errors": form.errors}, option=orjson.OPT_INDENT_2), media_type="text/plain")
    return Response(preview_json(body, saved), media_type="text/plain")


@router.get("/integrations/{integration_id}")
async def edit_integration(request: Request, integration_id: int, granted: Scope = Depends(scope)) -> Response:
    integration = await store_of(request).integration_of(granted.organization_id, integration_id)
    form = form_of(integration, entity_keys(request), kinds_of(await shapes_of(request)),
                   header_values=granted.can(Capability.MANAGE))
    return await _edit(request, granted, form, integration)


@router.post("/integrations/{integration_id}")
async def save_integration(request: Request, integration_id: int, granted: Scope = Depends(scope)) -> Response:
    org = granted.organization_id
    integration = await store_of(request).integration_of(org, integration_id)
    form, body = read_form(await request.form(), kinds_of(await shapes_of(request)))
    if await _refused(request, form, body) or body is None:
        return await _edit(request, granted, form, integration, 422)
    changes = body.model_dump()
    changes["name"] = body.name or body.url
    try:  # a secret typed here replaces the current one at once
        await actions.update_integration(store_of(request), request.app.state.settings.api, granted.actor,
                                         integration_id, changes, secret=_typed_secret(form))
    except Forbidden as exc:
        return await _forbidden(request, granted, form, integration, exc)
    return RedirectResponse(f"/portal/o/{org}/integrations/{integration_id}?saved=1", status_code=303)


@router.post("/integrations/{integration_id}/enable")
async def enable(request: Request, integration_id: int, granted: Scope = Depends(scope)) -> Response:
    await actions.enable(store_of(request), granted.actor, integration_id, replay=True)
    return RedirectResponse(f"/portal/o/{granted.organization_id}/integrations/{integration_id}", status_code=303)


@router.post("/integrations/{integration_id}/disable")
async def disable(request: Request, integration_id: int, granted: Scope = Depends(scope),
                  reason: str = Form("", max_length=500)) -> Response:
    await actions.disable(store_of(request), request.app.state.settings.kafka, granted.actor, integration_id,
                          reason.strip() or "disabled in the portal")
    return RedirectResponse(f"/portal/o/{granted.organization_id}/integrations/{integration_id}", status_code=303)
