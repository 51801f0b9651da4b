"""Backfill routes: start, list, follow, pause, resume and cancel an organization's backfills.

A backfill started with an organization's key reads only that organization's rows. The capture
process carries it out; these routes only store and change the job.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path, Query, Request

from control import actions
from control.actor import Actor
from control.api.auth import organization, store_of
from control.api.schemas import BackfillIn, BackfillOut
from publisher.store import Backfill, Store

router = APIRouter(prefix="/v1", tags=["organization"])
_ACTION = Path(pattern="^(pause|resume|cancel)$", description="pause, resume or cancel")


@router.post("/backfills", status_code=202, response_model=BackfillOut)
async def create_backfill(body: BackfillIn, request: Request, org: str = Depends(organization),
                          store: Store = Depends(store_of)) -> BackfillOut:
    """Start a backfill; the capture process runs it. Follow it at ``/v1/backfills/{id}``."""
    settings = request.app.state.settings
    return backfill_out(await actions.start_backfill(store, settings.entities, settings.source,
                                                     Actor.organization(org), entity_key=body.entity_key,
                                                     integration_id=body.integration_id, row_filter=body.filter))


@router.get("/backfills", response_model=list[BackfillOut])
async def list_backfills(org: str = Depends(organization), store: Store = Depends(store_of),
                         state: str | None = Query(default=None, pattern="^(running|paused|cancelled|failed|done)$"),
                         limit: int = Query(default=50, ge=1, le=500)) -> list[BackfillOut]:
    return [backfill_out(job) for job in await store.backfills(org, state, limit)]


@router.get("/backfills/{backfill_id}", response_model=BackfillOut)
async def get_backfill(backfill_id: int, org: str = Depends(organization), store: Store = Depends(store_of)
                       ) -> BackfillOut:
    return backfill_out(await store.backfill(org, backfill_id))


@router.post("/backfills/{backfill_id}/{action}", response_model=BackfillOut)
async def change_backfill(backfill_id: int, action: str = _ACTION, org: str = Depends(organization),
                          store: Store = Depends(store_of)) -> BackfillOut:
    """``pause``, ``resume`` or ``cancel``; the capture process sees it at its next chunk (409 when it does not
    apply to the backfill's state)."""
    return backfill_out(await actions.change_backfill(store, Actor.organization(org), backfill_id, action))


def backfill_out(job: Backfill) -> BackfillOut:
    return BackfillOut(**asdict(job), percent=job.percent)
