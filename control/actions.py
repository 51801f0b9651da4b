"""Management actions shared by the API, the portal and the CLI: one function each.

Each front end says who asks (an ``Actor``: an organization's key, a portal session with its
capabilities, the operator at the command line) and calls the action here. The action checks the
actor's capability, the organization's limits and ownership, then does the one thing with all its
side effects, so an action behaves the same whichever screen or command started it. A foreign
organization's integration, delivery or job is ``NotFound``, as a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil
from typing import Any

from control import backfills
from control.actor import Actor, Capability
from models.jobs import Backfill
from models.settings import ApiSettings, EntitySettings, KafkaSettings, SourceSettings
from publisher.errors import Throttled
from publisher.routing.matching import SubscriptionItem
from publisher.sending.signing import generate_secret
from publisher.settling.positions import committed_positions
from publisher.store import Integration, ReplayJob, Scheduled, Store


async def integration_for(store: Store, actor: Actor, integration_id: int) -> Integration:
    """The integration an action names, if the actor's organization owns it."""
    if actor.organization_id is None:
        return await store.integration(integration_id)
    return await store.integration_of(actor.organization_id, integration_id)


async def create_integration(store: Store, api: ApiSettings, actor: Actor, organization_id: str, url: str,
                             events: Sequence[SubscriptionItem], name: str = "", *, secret: str | None = None,
                             **fields: Any) -> int:
    """A new integration of the organization, within ``[api] max_integrations_per_organization`` and
    ``max_condition_cost_per_organization`` (``Conflict`` past them); ``fields`` are the store's optional
    ones (environment, ordering, ...). A ``secret`` typed with it signs from the start (needs ``secrets``)."""
    actor.require(Capability.MANAGE, "create integrations")
    if secret:
        actor.require(Capability.SECRETS, "set signing secrets")
    integration_id = await store.add_integration(actor.owner_of(organization_id), url, events, name, **fields,
                                                 limit=api.max_integrations_per_organization,
                                                 cost_limit=api.max_condition_cost_per_organization)
    if secret:
        await store.rotate_secret(organization_id, integration_id, timedelta(0), secret)
    return integration_id


async def update_integration(store: Store, api: ApiSettings, actor: Actor, integration_id: int,
                             changes: dict[str, Any], *, secret: str | None = None) -> None:
    """Change an integration's fields, its subscriptions within ``[api] max_condition_cost_per_organization``
    (``Conflict`` past it): one organization's conditions cannot slow the routing of everyone's events. A
    ``secret`` replaces the current one at once (needs ``secrets``)."""
    actor.require(Capability.MANAGE, "change integrations")
    if secret:
        actor.require(Capability.SECRETS, "set signing secrets")
    integration = await integration_for(store, actor, integration_id)
    await store.update_integration(integration.organization_id, integration_id, changes,
                                   cost_limit=api.max_condition_cost_per_organization)
    if secret:
        await store.rotate_secret(integration.organization_id, integration_id, timedelta(0), secret)


async def disable(store: Store, kafka: KafkaSettings | None, actor: Actor, integration_id: int,
                  reason: str) -> Integration:
    """Disable an integration, remembering first where the publishers' consumer group stood.

    The positions are read before any publisher sees the disable, so the enable's catch-up starts
    at the first record whose deliveries were not recorded, however far the consumers lagged (see
    ``publisher.settling.positions``). Without them it would start at the moment of the disable and skip
    the records written before it but consumed after it.
    """
    actor.require(Capability.MANAGE, "disable integrations")
    integration = await integration_for(store, actor, integration_id)
    positions = await committed_positions(kafka)
    await store.set_enabled(integration.id, False, reason, positions)
    return integration


async def enable(store: Store, actor: Actor, integration_id: int, *, replay: bool = True) -> ReplayJob | None:
    """Enable an integration; unless told not to, a replay job catches up from where it was disabled."""
    actor.require(Capability.MANAGE, "enable integrations")
    return await store.enable(actor.organization_id, integration_id, replay=replay)


async def rotate_secret(store: Store, actor: Actor, organization_id: str, integration_id: int | None,
                        overlap: timedelta) -> str:
    """A new signing secret for the integration (or the organization's default); the previous ones keep
    signing for ``overlap``. Returns the new secret, shown once."""
    actor.require(Capability.SECRETS, "rotate signing secrets")
    if integration_id is not None:
        organization_id = (await integration_for(store, actor, integration_id)).organization_id
    return await store.rotate_secret(actor.owner_of(organization_id), integration_id, overlap)


async def reveal_secrets(store: Store, actor: Actor, integration_id: int) -> list[str]:
    """The integration's active signing secrets, newest first."""
    actor.require(Capability.SECRETS, "reveal signing secrets")
    return (await integration_for(store, actor, integration_id)).secrets


@dataclass(frozen=True)
class SampleSigning:
    """The secrets a sample is signed with; ``throwaway`` when made for this sample alone."""

    secrets: list[str]
    throwaway: bool


def sample_signing(actor: Actor, real: list[str]) -> SampleSigning:
    """The one rule for what signs a sample. Its values are the sender's choice ("as if" rows, a typed URL),
    so a sample signed with a real secret is an event the receiver trusts: only an actor that may use the
    secrets (``secrets``, as reveal and rotate need) signs with them; any other signs with a secret made for
    this sample, and the result says so. An organization's API key reads the secrets anyway."""
    actor.require(Capability.MANAGE, "send samples")
    if actor.can(Capability.SECRETS):
        return SampleSigning(real, throwaway=False)
    return SampleSigning([generate_secret()], throwaway=True)


async def start_replay(store: Store, api: ApiSettings, actor: Actor, integration_id: int, *,
                       offset: int | None = None, since: datetime | None = None) -> ReplayJob:
    """A replay job of the integration from an offset or a moment (checked: ``publisher.jobs.replay_input``).

    An organization may have ``[api] max_replay_jobs_per_organization`` running or queued, within its
    budget of manual actions (``within_budget``); the operator is not limited.
    """
    actor.require(Capability.RECOVER, "replay")
    integration = await integration_for(store, actor, integration_id)
    await within_budget(store, api, actor, "replay")
    limit = api.max_replay_jobs_per_organization if actor.limited else None
    return await store.create_replay_job(integration.organization_id, integration.id, start_offset=offset,
                                         since=since, limit=limit)


async def cancel_replay(store: Store, actor: Actor, job_id: int) -> ReplayJob:
    """Cancel a replay job: a running one stops at its next record, a queued one never reads."""
    actor.require(Capability.RECOVER, "cancel replay jobs")
    return await store.cancel_replay_job(actor.organization_id, job_id)


async def redeliver(store: Store, api: ApiSettings, actor: Actor, delivery_id: int) -> Scheduled:
    """One more attempt of a delivery now, within the organization's budget of manual actions."""
    actor.require(Capability.RECOVER, "redeliver")
    if actor.organization_id is not None:
        await store.delivery_of(actor.organization_id, delivery_id)  # another organization's: 404 before any budget
    await within_budget(store, api, actor, "redeliver")
    return await store.redeliver(delivery_id, actor.organization_id)


async def recover(store: Store, api: ApiSettings, actor: Actor, integration_id: int,
                  since: datetime) -> list[Scheduled]:
    """One more attempt of every delivery of the integration that failed since ``since``, within the budget."""
    actor.require(Capability.RECOVER, "recover failed deliveries")
    integration = await integration_for(store, actor, integration_id)
    await within_budget(store, api, actor, "recover")
    return await store.recover(integration.id, since)


async def start_backfill(store: Store, entities: Sequence[EntitySettings], source: SourceSettings | None,
                         actor: Actor, *, table: str | None = None, entity_key: str | None = None,
                         organization_id: str | None = None, integration_id: int | None = None,
                         row_filter: str | None = None) -> Backfill:
    """A backfill of a captured table (named by table or entity key), checked and stored for the capture to
    run: of one organization's rows (an organization's actor: always its own) or every organization's (the
    operator, without ``organization_id``), for every subscriber to ``KEY:read`` or one integration."""
    actor.require(Capability.RECOVER, "start backfills")
    if actor.organization_id is not None:
        organization_id = actor.organization_id
    if integration_id is not None:
        await integration_for(store, actor, integration_id)
    entity = backfills.entity_of(entities, table=table, entity_key=entity_key)
    return await backfills.start_backfill(store, entity, source, organization_id=organization_id,
                                          integration_id=integration_id, row_filter=row_filter)


async def change_backfill(store: Store, actor: Actor, backfill_id: int, action: str) -> Backfill:
    """Pause, resume or cancel a backfill."""
    actor.require(Capability.RECOVER, f"{action} backfills")
    return await store.change_backfill(actor.organization_id, backfill_id, action)


async def within_budget(store: Store, api: ApiSettings, actor: Actor, kind: str) -> None:
    """Refuse (``Throttled``, 429 with when to retry) a manual action that writes the shared delivery log
    past the organization's limits: ``[api] manual_actions_per_minute``, and ``[api]
    log_mb_per_organization`` written in the last 24 hours. The operator is not limited."""
    if actor.organization_id is None:
        return
    organization_id = actor.organization_id
    usage = await store.usage(organization_id)
    if usage.log_bytes_24h >= api.log_mb_per_organization * 1024 * 1024:
        raise Throttled(f"organization {organization_id!r} wrote {usage.log_bytes_24h / 2**20:.0f} MB of delivery "
                        f"log in the last 24 hours, its quota ([api] log_mb_per_organization = "
                        f"{api.log_mb_per_organization}); try again in an hour", retry_after=3600)
    wait = await store.take_action(organization_id, kind, api.manual_actions_per_minute)
    if wait:
        raise Throttled(f"organization {organization_id!r} took {api.manual_actions_per_minute} redeliver, "
                        f"recover or replay actions in the last minute, the most allowed ([api] "
                        f"manual_actions_per_minute); try again in {ceil(wait)} s", retry_after=ceil(wait))
