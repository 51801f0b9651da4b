"""Organization routes: everything an organization's API key may do, and only to its own data."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from control import actions
from control.actor import Actor
from control.api.auth import organization, store_of
from control.api.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    DeliveryPage,
    EnabledOut,
    IntegrationCreated,
    IntegrationIn,
    IntegrationOut,
    IntegrationPatch,
    KeyCreated,
    KeyIn,
    KeyOut,
    RecoverIn,
    ReplayIn,
    ReplayJobOut,
    RotateIn,
    SampleIn,
    SampleOut,
    Scheduled,
    ScheduledOut,
    SecretOut,
    SubscriptionIn,
    UsageOut,
    items_of,
)
from models.errors import NotFound
from models.events import parse_time
from publisher.store import ReplayJob, Store

router = APIRouter(prefix="/v1", tags=["organization"])


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(org: str = Depends(organization), store: Store = Depends(store_of)) -> list[KeyOut]:
    return [KeyOut(**asdict(row)) for row in await store.api_keys(org)]


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyIn, org: str = Depends(organization), store: Store = Depends(store_of)) -> KeyCreated:
    row, key = await store.add_api_key(org, body.name)
    return KeyCreated(**asdict(row), key=key)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: int, org: str = Depends(organization), store: Store = Depends(store_of)) -> None:
    await store.revoke_api_key(org, key_id)


@router.get("/integrations", response_model=list[IntegrationOut])
async def list_integrations(org: str = Depends(organization), store: Store = Depends(store_of)
                            ) -> list[IntegrationOut]:
    return [IntegrationOut.of(i.describe()) for i in await store.integrations_of(org, include_disabled=True)]


@router.post("/integrations", status_code=201, response_model=IntegrationCreated)
async def create_integration(request: Request, body: IntegrationIn, org: str = Depends(organization),
                             store: Store = Depends(store_of)) -> IntegrationCreated:
    await check_events(request, body.events)
    await request.app.state.sender.policy.check_destination(body.url)
    integration_id = await actions.create_integration(
        store, request.app.state.settings.api, Actor.organization(org), org, body.url, items_of(body.events),
        body.name or "",
        environment=body.environment, ordering=body.ordering or "entity", batch_size=body.batch_size or 1,
        rate_limit=body.rate_limit, headers=body.headers, concurrency=body.concurrency,
        send_traceparent=bool(body.send_traceparent))
    integration = await store.integration_of(org, integration_id)
    return IntegrationCreated(**IntegrationOut.of(integration.describe()).model_dump(), secrets=integration.secrets)


async def check_events(request: Request, events: list[str | SubscriptionIn]) -> None:
    """Known entity keys, and conditions that can hold on their entities' columns (422 naming what cannot)."""
    from control.columns import checked_subscriptions

    settings = request.app.state.settings
    await checked_subscriptions(items_of(events), settings.entities,
                                settings.source.dsn if settings.source is not None else None)


@router.get("/integrations/{integration_id}", response_model=IntegrationOut)
async def get_integration(integration_id: int, org: str = Depends(organization),
                          store: Store = Depends(store_of)) -> IntegrationOut:
    return IntegrationOut.of((await store.integration_of(org, integration_id)).describe())


@router.patch("/integrations/{integration_id}", response_model=IntegrationOut)
async def update_integration(request: Request, integration_id: int, body: IntegrationPatch,
                             org: str = Depends(organization), store: Store = Depends(store_of)) -> IntegrationOut:
    await store.integration_of(org, integration_id)
    if body.events is not None:
        await check_events(request, body.events)
    if body.url is not None:
        await request.app.state.sender.policy.check_destination(body.url)
    await actions.update_integration(store, request.app.state.settings.api, Actor.organization(org), integration_id,
                                     body.model_dump(exclude_unset=True))
    return IntegrationOut.of((await store.integration_of(org, integration_id)).describe())


@router.delete("/integrations/{integration_id}", status_code=204)
async def delete_integration(integration_id: int, org: str = Depends(organization),
                             store: Store = Depends(store_of)) -> None:
    await store.delete_integration(org, integration_id)


@router.post("/integrations/{integration_id}/enable", response_model=EnabledOut)
async def enable_integration(integration_id: int, org: str = Depends(organization), store: Store = Depends(store_of),
                             replay: bool = Query(default=True, description="replay what happened while it was "
                                                  "disabled (a job; live changes wait behind it)")) -> EnabledOut:
    job = await actions.enable(store, Actor.organization(org), integration_id, replay=replay)
    integration = IntegrationOut.of((await store.integration_of(org, integration_id)).describe())
    return EnabledOut(**integration.model_dump(), replay_job=job_out(job) if job else None)


@router.post("/integrations/{integration_id}/disable", response_model=IntegrationOut)
async def disable_integration(request: Request, integration_id: int, org: str = Depends(organization),
                              store: Store = Depends(store_of)) -> IntegrationOut:
    await actions.disable(store, request.app.state.settings.kafka, Actor.organization(org), integration_id,
                          "disabled through the API")
    return IntegrationOut.of((await store.integration_of(org, integration_id)).describe())


@router.get("/integrations/{integration_id}/secret", response_model=SecretOut)
async def reveal_secret(integration_id: int, org: str = Depends(organization),
                        store: Store = Depends(store_of)) -> SecretOut:
    return SecretOut(secrets=await actions.reveal_secrets(store, Actor.organization(org), integration_id))


@router.post("/integrations/{integration_id}/secret/rotate", response_model=SecretOut)
async def rotate_integration_secret(integration_id: int, body: RotateIn, org: str = Depends(organization),
                                    store: Store = Depends(store_of)) -> SecretOut:
    await actions.rotate_secret(store, Actor.organization(org), org, integration_id,
                                timedelta(hours=body.overlap_hours))
    return SecretOut(secrets=(await store.integration_of(org, integration_id)).secrets)


@router.post("/secret/rotate", response_model=SecretOut)
async def rotate_organization_secret(body: RotateIn, org: str = Depends(organization),
                                     store: Store = Depends(store_of)) -> SecretOut:
    secret = await actions.rotate_secret(store, Actor.organization(org), org, None, timedelta(hours=body.overlap_hours))
    return SecretOut(secrets=[secret])


@router.post("/integrations/{integration_id}/sample", response_model=SampleOut)
async def send_sample_payload(request: Request, integration_id: int, body: SampleIn,
                              org: str = Depends(organization), store: Store = Depends(store_of)) -> SampleOut:
    from control.sample import send_sample

    await store.integration_of(org, integration_id)
    entity = next((e for e in request.app.state.settings.entities if e.entity_key == body.entity_key), None)
    if entity is None:
        raise NotFound(f"entity key {body.entity_key!r} is not in this deployment's catalogue")
    result = await send_sample(store, request.app.state.sender, integration_id, entity, body.operation, body.new,
                               body.old)
    return SampleOut(webhook_id=result.webhook_id, status=result.status, headers=result.headers, body=result.body,
                     duration_ms=result.duration_ms, error=result.error, payload=result.payload,
                     subscribed=result.subscribed)


@router.get("/catalogue")
async def event_catalogue(request: Request, org: str = Depends(organization)) -> list[dict[str, Any]]:
    from models.samples import catalogue

    return catalogue(request.app.state.settings.entities, organization_id=org)


@router.get("/deliveries", response_model=DeliveryPage)
async def list_deliveries(org: str = Depends(organization), store: Store = Depends(store_of),
                          integration_id: int | None = None, status: str | None = Query(
                              default=None, pattern="^(pending|succeeded|failed)$"),
                          entity_key: str | None = Query(default=None, max_length=200, pattern=r"^[^\x00]*$"),
                          event_id: str | None = Query(default=None, max_length=200, pattern=r"^[^\x00]*$"),
                          operation: str | None = Query(default=None, pattern="^(created|updated|deleted|read)$"),
                          entity_path: str | None = Query(default=None, max_length=2000, pattern=r"^[^\x00]*$"),
                          since: str | None = None, until: str | None = None,
                          cursor: int | None = Query(default=None, ge=1), limit: int = Query(default=50, ge=1, le=500)
                          ) -> DeliveryPage:
    rows = await store.deliveries(integration_id, status, limit, organization_id=org, entity_key=entity_key,
                                  event_id=event_id, since=_time(since), until=_time(until), before_id=cursor,
                                  operation=operation, entity_path=entity_path)
    return DeliveryPage(items=[DeliveryOut(**asdict(row)) for row in rows],
                        next_cursor=rows[-1].id if len(rows) == limit else None)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail)
async def get_delivery(delivery_id: int, org: str = Depends(organization),
                       store: Store = Depends(store_of)) -> DeliveryDetail:
    row = await store.delivery_of(org, delivery_id)
    body = await store.delivery_body(delivery_id)
    attempts = [AttemptOut(**{**asdict(a), "response_body": None if a.response_body is None else
                              a.response_body.decode("utf-8", "replace")})
                for a in await store.attempts_of(delivery_id)]
    return DeliveryDetail(**asdict(row), body=body.decode("utf-8", "replace"), attempts_log=attempts)


@router.post("/deliveries/{delivery_id}/redeliver", response_model=Scheduled)
async def redeliver(request: Request, delivery_id: int, org: str = Depends(organization),
                    store: Store = Depends(store_of)) -> Scheduled:
    scheduled = await actions.redeliver(store, request.app.state.settings.api, Actor.organization(org), delivery_id)
    return Scheduled(scheduled=[ScheduledOut(**asdict(scheduled))])


@router.post("/integrations/{integration_id}/recover", response_model=Scheduled)
async def recover(request: Request, integration_id: int, body: RecoverIn, org: str = Depends(organization),
                  store: Store = Depends(store_of)) -> Scheduled:
    scheduled = await actions.recover(store, request.app.state.settings.api, Actor.organization(org), integration_id,
                                       body.since)
    return Scheduled(scheduled=[ScheduledOut(**asdict(row)) for row in scheduled])


@router.post("/integrations/{integration_id}/replay", status_code=202, response_model=ReplayJobOut)
async def replay_integration(request: Request, integration_id: int, body: ReplayIn, org: str = Depends(organization),
                             store: Store = Depends(store_of)) -> ReplayJobOut:
    """Start a replay job; a running publisher carries it out. Follow it at ``/v1/replay-jobs/{id}``."""
    return job_out(await actions.start_replay(store, request.app.state.settings.api, Actor.organization(org),
                                              integration_id, offset=body.offset, since=body.since))


@router.get("/usage", response_model=UsageOut)
async def usage(request: Request, org: str = Depends(organization), store: Store = Depends(store_of)) -> UsageOut:
    """How much of its limits the organization's manual actions use (see docs/guides/security.md)."""
    return UsageOut.of(await store.usage(org), request.app.state.settings.api)


@router.get("/replay-jobs", response_model=list[ReplayJobOut])
async def list_replay_jobs(org: str = Depends(organization), store: Store = Depends(store_of),
                           integration_id: int | None = Query(default=None, ge=1, le=2**63 - 1),
                           state: str | None = Query(default=None, pattern="^(running|done|failed|cancelled)$"),
                           limit: int = Query(default=50, ge=1, le=500)) -> list[ReplayJobOut]:
    return [job_out(job) for job in await store.replay_jobs(org, integration_id, state, limit)]


@router.get("/replay-jobs/{job_id}", response_model=ReplayJobOut)
async def get_replay_job(job_id: int, org: str = Depends(organization), store: Store = Depends(store_of)
                         ) -> ReplayJobOut:
    return job_out(await store.replay_job(org, job_id))


@router.post("/replay-jobs/{job_id}/cancel", response_model=ReplayJobOut)
async def cancel_replay_job(job_id: int, org: str = Depends(organization), store: Store = Depends(store_of)
                            ) -> ReplayJobOut:
    return job_out(await actions.cancel_replay(store, Actor.organization(org), job_id))


def job_out(job: ReplayJob) -> ReplayJobOut:
    return ReplayJobOut(**asdict(job))
