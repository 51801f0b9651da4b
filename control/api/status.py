"""``GET /v1/status``: what ``walhook status`` shows. With the admin token, the whole deployment (for an
operator without database access); with an organization's key, that organization's own part."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from control.api.auth import admin_or_organization, store_of
from control.status import gather_organization_status, gather_status
from publisher.store import Store

router = APIRouter(prefix="/v1/status", tags=["status"])


@router.get("")
async def status(request: Request, store: Store = Depends(store_of),
                 org: str | None = Depends(admin_or_organization)) -> dict[str, Any]:
    """Admin token: the slot, the consumer group's lag, integrations, running replay jobs, the delivery log's
    size. An organization's key: its integrations, its running replay jobs and its usage against its limits."""
    settings = request.app.state.settings
    if org is not None:
        return await gather_organization_status(store, org, settings.api)
    return await gather_status(settings.source, settings.kafka, store, settings.entities)
