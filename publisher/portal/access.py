"""Issuing and exchanging portal links: the one place both the API and the portal's operator page use.

``create_link`` signs a grant and records it; ``exchange`` checks a presented token (signature,
expiry), spends its row and opens a session. The signing key is ``[portal] signing_key`` or,
when unset, a key the store keeps, so every API process behind a load balancer agrees on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from models.settings import PortalSettings
from publisher.errors import NotFound
from publisher.portal import links
from publisher.portal.links import Capability
from publisher.portal.records import PortalRecords, PortalSession
from publisher.store import Store

LINK_PATH = "/portal/link/"


@dataclass(frozen=True)
class IssuedLink:
    url: str
    expires_at: datetime
    capabilities: list[str]
    session_id: str | None


async def _key(settings: PortalSettings, records: PortalRecords) -> str:
    return settings.signing_key or await records.signing_key()


async def create_link(store: Store, settings: PortalSettings, base_url: str, organization_id: str,
                      capabilities: frozenset[Capability], expires_in: timedelta = links.DEFAULT_EXPIRY,
                      session_id: str | None = None) -> IssuedLink:
    """A single-use portal link for the organization; ``base_url`` is used unless ``public_url`` is set."""
    if not await store.organization_exists(organization_id):
        raise NotFound(f"organization {organization_id!r} does not exist")
    records = PortalRecords(store)
    grant = links.new_grant(organization_id, capabilities, expires_in, session_id)
    await records.issue(grant)
    base = (settings.public_url or base_url).rstrip("/")
    return IssuedLink(base + LINK_PATH + links.sign(grant, await _key(settings, records)), grant.expires_at,
                      sorted(grant.capabilities), session_id)


async def exchange(store: Store, settings: PortalSettings, token: str) -> tuple[str, PortalSession]:
    """Spend a link: the new session's cookie value and the session; ``LinkRefused`` says why not."""
    records = PortalRecords(store)
    grant = links.read(token, await _key(settings, records))
    return await records.spend(grant, timedelta(hours=settings.session_hours))


async def operator_session(store: Store, settings: PortalSettings) -> tuple[str, PortalSession]:
    """A session for an operator who signed in with the admin token: every organization, every capability."""
    return await PortalRecords(store).open_session(None, frozenset(links.ALL_CAPABILITIES),
                                                   timedelta(hours=settings.session_hours))
