"""Issuing and exchanging portal links: the one place both the API and the portal's operator page use.

``create_link`` signs a grant and records it; ``exchange`` checks a presented token (signature,
expiry), spends its row and opens a session with the capabilities stored with that row. The
signing key is ``[portal] signing_key`` or, when unset, one derived from the store's keyring (a key
the store keeps when it has none), so every API process behind a load balancer agrees on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from control.actor import ALL_CAPABILITIES, Capability
from control.errors import LinkRefused
from control.portal import links
from models.errors import NotFound
from models.settings import PortalSettings
from publisher.store import Store
from publisher.store.rows import PortalSessionRow

LINK_PATH = "/portal/link/"


@dataclass(frozen=True)
class PortalSession:
    """A signed-in portal user: one organization's session, or an operator's (``organization_id`` None)."""

    organization_id: str | None
    capabilities: frozenset[Capability]
    csrf_token: str
    session_id: str | None
    expires_at: datetime

    @classmethod
    def of(cls, row: PortalSessionRow) -> PortalSession:
        known = {c.value for c in ALL_CAPABILITIES}  # a capability a newer version stored is ignored, not fatal
        return cls(row.organization_id, frozenset(Capability(c) for c in row.capabilities if c in known),
                   row.csrf_token, row.session_id, row.expires_at)

    @property
    def operator(self) -> bool:
        return self.organization_id is None

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities


@dataclass(frozen=True)
class IssuedLink:
    url: str
    expires_at: datetime
    capabilities: list[str]
    session_id: str | None


async def _key(settings: PortalSettings, store: Store) -> str:
    return settings.signing_key or await store.portal_signing_key()


async def create_link(store: Store, settings: PortalSettings, base_url: str, organization_id: str,
                      capabilities: frozenset[Capability], expires_in: timedelta = links.DEFAULT_EXPIRY,
                      session_id: str | None = None) -> IssuedLink:
    """A single-use portal link for the organization; ``base_url`` is used unless ``public_url`` is set."""
    if not await store.organization_exists(organization_id):
        raise NotFound(f"organization {organization_id!r} does not exist")
    grant = links.new_grant(organization_id, capabilities, expires_in, session_id)
    await store.issue_portal_link(grant.link_id, organization_id, sorted(grant.capabilities), grant.expires_at,
                                  session_id)
    base = (settings.public_url or base_url).rstrip("/")
    return IssuedLink(base + LINK_PATH + links.sign(grant, await _key(settings, store)), grant.expires_at,
                      sorted(grant.capabilities), session_id)


async def exchange(store: Store, settings: PortalSettings, token: str) -> tuple[str, PortalSession]:
    """Spend a link: the new session's cookie value and the session; ``LinkRefused`` says why not."""
    grant = links.read(token, await _key(settings, store))
    stored = await store.spend_portal_link(grant.link_id, grant.organization_id)
    if stored is None:
        raise LinkRefused("this portal link was already used, revoked or has expired; ask for a new one")
    capabilities, session_id = stored  # what was granted when it was issued, whatever the token says
    cookie, row = await store.open_portal_session(grant.organization_id, sorted(capabilities),
                                                  timedelta(hours=settings.session_hours), session_id)
    return cookie, PortalSession.of(row)


async def operator_session(store: Store, settings: PortalSettings) -> tuple[str, PortalSession]:
    """A session for an operator who signed in with the admin token: every organization, every capability."""
    cookie, row = await store.open_portal_session(None, sorted(ALL_CAPABILITIES),
                                                  timedelta(hours=settings.session_hours))
    return cookie, PortalSession.of(row)


async def current(store: Store, cookie: str | None) -> PortalSession | None:
    """The live session of a cookie value, or None."""
    row = await store.portal_session(cookie) if cookie else None
    return None if row is None else PortalSession.of(row)
