"""``GET /v1/status`` (admin token): what ``walhook status`` shows, for an operator without database access."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from publisher.api.auth import require_admin, store_of
from publisher.status import gather_status
from publisher.store import Store

router = APIRouter(prefix="/v1/status", tags=["status (admin)"], dependencies=[Depends(require_admin)])


@router.get("")
async def status(request: Request, store: Store = Depends(store_of)) -> dict[str, Any]:
    """The slot, the consumer group's lag, integrations, running replay jobs and the delivery log's size."""
    settings = request.app.state.settings
    return await gather_status(settings.source, settings.kafka, store, settings.entities)
