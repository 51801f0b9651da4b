"""An integration's actions, each answering with a fragment: send a sample, reveal and rotate secrets.

Secrets are only ever rendered by these fragments: a reveal needs its confirmation box ticked,
and a rotation shows the new secret once, with when the old one stops signing.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from control.errors import PortalDenied
from control.portal.as_if import parse_as_if, verdict
from control.portal.auth import Scope, can_manage, can_use_secrets, scope, store_of
from control.portal.pages_conditions import kinds_of, shapes_of
from control.portal.render import page
from control.sample import send_sample
from models.errors import NotFound
from models.samples import EVENT_OPERATIONS
from publisher.store.rows import SecretPeriod

router = APIRouter(prefix="/portal/o/{organization_id}/integrations/{integration_id}", include_in_schema=False,
                   dependencies=[Depends(scope)])


@router.post("/sample")
async def sample(request: Request, integration_id: int, granted: Scope = Depends(can_manage),
                 entity_key: str = Form(max_length=200), operation: str = Form("created"),
                 as_if_new: str = Form("", max_length=2000), as_if_old: str = Form("", max_length=2000)) -> Response:
    """A sample, "as if" the new and old rows had the values typed; says whether the integration would receive it."""
    integration = await store_of(request).integration_of(granted.organization_id, integration_id)
    entity = next((e for e in request.app.state.settings.entities if e.entity_key == entity_key), None)
    if entity is None:
        raise NotFound(f"entity key {entity_key!r} is not in this deployment's catalogue")
    if operation not in EVENT_OPERATIONS:
        raise PortalDenied(422, f"unknown operation {operation!r}; use one of {', '.join(EVENT_OPERATIONS)}")
    kinds = kinds_of(await shapes_of(request)).get(entity_key, {})
    try:
        new, old = parse_as_if(as_if_new, kinds, "new"), parse_as_if(as_if_old, kinds, "old")
        result = await send_sample(store_of(request), request.app.state.sender, integration_id, entity, operation,
                                   new=new, old=old)
    except ValueError as exc:
        raise PortalDenied(422, str(exc)) from exc
    return page(request, "fragments/sample_result.html", result=result,
                verdict=verdict(integration, entity_key, operation, result.subscribed))


def _secrets(request: Request, granted: Scope, integration_id: int, secrets: list[str],
             schedule: list[SecretPeriod], rotated: bool = False) -> Response:
    return page(request, "fragments/secrets.html", scope=granted, integration_id=integration_id, secrets=secrets,
                schedule=schedule, rotated=rotated)


@router.post("/secret/reveal")
async def reveal(request: Request, integration_id: int, granted: Scope = Depends(can_use_secrets),
                 confirm: str = Form("")) -> Response:
    if confirm != "yes":
        raise PortalDenied(422, "tick the box to confirm that the secret may be shown on this screen")
    integration = await store_of(request).integration_of(granted.organization_id, integration_id)
    schedule = await store_of(request).secret_periods(granted.organization_id, integration_id)
    return _secrets(request, granted, integration_id, integration.secrets, schedule)


@router.post("/secret/rotate")
async def rotate(request: Request, integration_id: int, granted: Scope = Depends(can_use_secrets),
                 overlap_hours: float = Form(24.0, ge=0, le=24 * 7)) -> Response:
    store, org = store_of(request), granted.organization_id
    await store.integration_of(org, integration_id)
    secret = await store.rotate_secret(org, integration_id, timedelta(hours=overlap_hours))
    return _secrets(request, granted, integration_id, [secret], await store.secret_periods(org, integration_id),
                    rotated=True)
