"""Management actions shared by the API, the portal and the CLI: one function each.

Each front end checks who asks (an organization's key, a portal session's capabilities, the
operator at the command line) and then calls the action here, so an action's side effects are
the same whichever screen or command started it. ``organization_id`` None is the operator, who
may act on any organization's integration.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from math import ceil
from typing import Any

from models.settings import ApiSettings, KafkaSettings
from publisher.errors import Throttled
from publisher.routing.matching import SubscriptionItem
from publisher.settling.positions import committed_positions
from publisher.store import Integration, ReplayJob, Scheduled, Store


async def integration_for(store: Store, organization_id: str | None, integration_id: int) -> Integration:
    """The integration an action names: another organization's is ``NotFound``, as a missing one."""
    if organization_id is None:
        return await store.integration(integration_id)
    return await store.integration_of(organization_id, integration_id)


async def create_integration(store: Store, api: ApiSettings, organization_id: str, url: str,
                             events: Sequence[SubscriptionItem], name: str = "", **fields: Any) -> int:
    """A new integration of the organization, within ``[api] max_integrations_per_organization`` and
    ``max_condition_cost_per_organization`` (``Conflict`` past them); ``fields`` are the store's optional
    ones (environment, ordering, ...)."""
    return await store.add_integration(organization_id, url, events, name, **fields,
                                       limit=api.max_integrations_per_organization,
                                       cost_limit=api.max_condition_cost_per_organization)


async def update_integration(store: Store, api: ApiSettings, organization_id: str, integration_id: int,
                             changes: dict[str, Any]) -> None:
    """Change an integration's fields, its subscriptions within ``[api] max_condition_cost_per_organization``
    (``Conflict`` past it): one organization's conditions cannot slow the routing of everyone's events."""
    await store.update_integration(organization_id, integration_id, changes,
                                   cost_limit=api.max_condition_cost_per_organization)


async def disable(store: Store, kafka: KafkaSettings | None, organization_id: str | None, integration_id: int,
                  reason: str) -> Integration:
    """Disable an integration, remembering first where the publishers' consumer group stood.

    The positions are read before any publisher sees the disable, so the enable's catch-up starts
    at the first record whose deliveries were not recorded, however far the consumers lagged (see
    ``publisher.settling.positions``). Without them it would start at the moment of the disable and skip
    the records written before it but consumed after it.
    """
    integration = await integration_for(store, organization_id, integration_id)
    positions = await committed_positions(kafka)
    await store.set_enabled(integration.id, False, reason, positions)
    return integration


async def enable(store: Store, organization_id: str | None, integration_id: int, *,
                 replay: bool = True) -> ReplayJob | None:
    """Enable an integration; unless told not to, a replay job catches up from where it was disabled."""
    return await store.enable(organization_id, integration_id, replay=replay)


async def start_replay(store: Store, api: ApiSettings, organization_id: str | None, integration_id: int, *,
                       offset: int | None = None, since: datetime | None = None) -> ReplayJob:
    """A replay job of the integration from an offset or a moment (checked: ``publisher.jobs.replay_input``).

    An organization may have ``[api] max_replay_jobs_per_organization`` running or queued, within its
    budget of manual actions (``within_budget``); the operator (``organization_id`` None) is not limited.
    """
    integration = await integration_for(store, organization_id, integration_id)
    await within_budget(store, api, organization_id, "replay")
    limit = None if organization_id is None else api.max_replay_jobs_per_organization
    return await store.create_replay_job(integration.organization_id, integration.id, start_offset=offset,
                                         since=since, limit=limit)


async def redeliver(store: Store, api: ApiSettings, organization_id: str | None, delivery_id: int) -> Scheduled:
    """One more attempt of a delivery now, within the organization's budget of manual actions."""
    if organization_id is not None:
        await store.delivery_of(organization_id, delivery_id)  # another organization's: 404 before any budget
    await within_budget(store, api, organization_id, "redeliver")
    return await store.redeliver(delivery_id, organization_id)


async def recover(store: Store, api: ApiSettings, organization_id: str | None, integration_id: int,
                  since: datetime) -> list[Scheduled]:
    """One more attempt of every delivery of the integration that failed since ``since``, within the budget."""
    integration = await integration_for(store, organization_id, integration_id)
    await within_budget(store, api, organization_id, "recover")
    return await store.recover(integration.id, since)


async def within_budget(store: Store, api: ApiSettings, organization_id: str | None, kind: str) -> None:
    """Refuse (``Throttled``, 429 with when to retry) a manual action that writes the shared delivery log
    past the organization's limits: ``[api] manual_actions_per_minute``, and ``[api]
    log_mb_per_organization`` written in the last 24 hours. The operator is not limited."""
    if organization_id is None:
        return
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
