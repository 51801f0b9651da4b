"""An integration's actions, each answering with a fragment: send a sample, reveal and rotate secrets.

Secrets are only ever rendered by these fragments: a reveal needs its confirmation box ticked,
and a rotation shows the new secret once, with when the old one stops signing. A sample is
signed with real secrets only for a session that may use them (:func:`sample_signing`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from control import actions
from control.api.schemas import items_of
from control.errors import PortalDenied
from control.portal.as_if import parse_as_if, verdict
from control.portal.auth import Scope, scope, store_of
from control.portal.forms import read_form
from control.portal.pages_conditions import kinds_of, shapes_of
from control.portal.render import page
from control.sample import sample_to
from models.errors import NotFound
from models.samples import EVENT_OPERATIONS
from publisher.routing.matching import parse_items
from publisher.store import Integration
from publisher.store.rows import SecretPeriod

router = APIRouter(prefix="/portal/o/{organization_id}/integrations/{integration_id}", include_in_schema=False,
                   dependencies=[Depends(scope)])
# The Add page's actions, before the integration has an id; routed before /integrations/{integration_id}.
unsaved = APIRouter(prefix="/portal/o/{organization_id}/integrations", include_in_schema=False,
                    dependencies=[Depends(scope)])


async def _sample(request: Request, granted: Scope, integration: Integration, entity_key: str, operation: str,
                  as_if_new: str, as_if_old: str) -> Response:
    """Send the sample to ``integration`` (its secrets still the real ones) and show what came back."""
    entity = next((e for e in request.app.state.settings.entities if e.entity_key == entity_key), None)
    if entity is None:
        raise NotFound(f"entity key {entity_key!r} is not in this deployment's catalogue")
    if operation not in EVENT_OPERATIONS:
        raise PortalDenied(422, f"unknown operation {operation!r}; use one of {', '.join(EVENT_OPERATIONS)}")
    kinds = kinds_of(await shapes_of(request)).get(entity_key, {})
    signing = actions.sample_signing(granted.actor, integration.secrets)
    try:
        new, old = parse_as_if(as_if_new, kinds, "new"), parse_as_if(as_if_old, kinds, "old")
        result = await sample_to(request.app.state.sender, replace(integration, secrets=signing.secrets), entity,
                                 operation, new=new, old=old)
    except ValueError as exc:
        raise PortalDenied(422, str(exc)) from exc
    return page(request, "fragments/sample_result.html", result=result, throwaway=signing.throwaway,
                verdict=verdict(integration, entity_key, operation, result.subscribed))


@router.post("/sample")
async def sample(request: Request, integration_id: int, granted: Scope = Depends(scope),
                 entity_key: str = Form(max_length=200), operation: str = Form("created"),
                 as_if_new: str = Form("", max_length=2000), as_if_old: str = Form("", max_length=2000)) -> Response:
    """A sample, "as if" the new and old rows had the values typed; says whether the integration would receive it."""
    integration = await store_of(request).integration_of(granted.organization_id, integration_id)
    return await _sample(request, granted, integration, entity_key, operation, as_if_new, as_if_old)


@unsaved.post("/sample")
async def sample_unsaved(request: Request, granted: Scope = Depends(scope),
                         entity_key: str = Form(max_length=200), operation: str = Form("created"),
                         as_if_new: str = Form("", max_length=2000),
                         as_if_old: str = Form("", max_length=2000)) -> Response:
    """The Add page's sample, before the first save: to the URL, events and headers typed in the form, and
    (with ``secrets``) signed with the secret typed there, else the organization's, which it will get."""
    form, body = read_form(await request.form(), kinds_of(await shapes_of(request)))
    if body is None:
        field, problem = next(iter(form.errors.items()))
        raise PortalDenied(422, f"fill in the form first: {field}: {problem}")
    typed = form.values.get("secret", "").strip()
    real = [typed] if typed else await store_of(request).organization_secrets(granted.organization_id)
    integration = Integration(0, granted.organization_id, body.name or body.url, body.url,
                              parse_items(items_of(body.events)), real, environment=body.environment,
                              headers=body.headers or {})
    return await _sample(request, granted, integration, entity_key, operation, as_if_new, as_if_old)


def _secrets(request: Request, granted: Scope, integration_id: int, secrets: list[str],
             schedule: list[SecretPeriod], rotated: bool = False) -> Response:
    return page(request, "fragments/secrets.html", scope=granted, integration_id=integration_id, secrets=secrets,
                schedule=schedule, rotated=rotated)


@router.post("/secret/reveal")
async def reveal(request: Request, integration_id: int, granted: Scope = Depends(scope),
                 confirm: str = Form("")) -> Response:
    secrets = await actions.reveal_secrets(store_of(request), granted.actor, integration_id)
    if confirm != "yes":
        raise PortalDenied(422, "tick the box to confirm that the secret may be shown on this screen")
    schedule = await store_of(request).secret_periods(granted.organization_id, integration_id)
    return _secrets(request, granted, integration_id, secrets, schedule)


@router.post("/secret/rotate")
async def rotate(request: Request, integration_id: int, granted: Scope = Depends(scope),
                 overlap_hours: float = Form(24.0, ge=0, le=24 * 7)) -> Response:
    store, org = store_of(request), granted.organization_id
    secret = await actions.rotate_secret(store, granted.actor, org, integration_id, timedelta(hours=overlap_hours))
    return _secrets(request, granted, integration_id, [secret], await store.secret_periods(org, integration_id),
                    rotated=True)
