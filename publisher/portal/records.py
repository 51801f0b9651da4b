"""Portal links and sessions in the store: issue, spend once, look up, revoke.

A link's row is written when it is issued and marked used when it is exchanged, in one
``UPDATE ... WHERE used_at IS NULL``, so two tabs racing with the same link cannot both win.
A session is a random cookie value; the store keeps only its SHA-256, with the organization
(none for an operator), the capabilities, the CSRF token and the expiry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from secrets import token_urlsafe

from publisher.portal.links import ALL_CAPABILITIES, Capability, LinkGrant, LinkRefused
from publisher.store import Store


@dataclass(frozen=True)
class PortalSession:
    """A signed-in portal user: one organization's session, or an operator's (``organization_id`` None)."""

    organization_id: str | None
    capabilities: frozenset[Capability]
    csrf_token: str
    session_id: str | None
    expires_at: datetime

    @property
    def operator(self) -> bool:
        return self.organization_id is None

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PortalRecords:
    """The portal's rows, through the store's connection pool and error translation."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def signing_key(self) -> str:
        """The store-kept key links are signed with, made on first use (one per store, so every API agrees)."""
        rows = await self._store._rows(
            "INSERT INTO {s}.portal_signing_keys (id, key) VALUES (1, :key) ON CONFLICT (id) DO UPDATE "
            "SET key = {s}.portal_signing_keys.key RETURNING key", {"key": token_urlsafe(48)})
        return str(rows[0]["key"])

    async def issue(self, grant: LinkGrant) -> None:
        await self._store._rows(
            "INSERT INTO {s}.portal_links (id, organization_id, capabilities, session_id, expires_at) "
            "VALUES (:id, :org, :caps, :session, :expires)",
            {"id": grant.link_id, "org": grant.organization_id, "caps": sorted(grant.capabilities),
             "session": grant.session_id, "expires": grant.expires_at})

    async def spend(self, grant: LinkGrant, session_for: timedelta) -> tuple[str, PortalSession]:
        """Mark the link used and open its session; returns the cookie value and the session."""
        rows = await self._store._rows(
            "UPDATE {s}.portal_links SET used_at = now() WHERE id = :id AND organization_id = :org "
            "AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() RETURNING id",
            {"id": grant.link_id, "org": grant.organization_id})
        if not rows:
            raise LinkRefused("this portal link was already used, revoked or has expired; ask for a new one")
        return await self.open_session(grant.organization_id, grant.capabilities, session_for, grant.session_id)

    async def open_session(self, organization_id: str | None, capabilities: frozenset[Capability],
                           lasting: timedelta, session_id: str | None = None) -> tuple[str, PortalSession]:
        """A new session (``organization_id`` None: an operator's); returns the cookie value and the session."""
        cookie, csrf = token_urlsafe(32), token_urlsafe(24)
        rows = await self._store._rows(
            "INSERT INTO {s}.portal_sessions (token_hash, organization_id, capabilities, session_id, csrf_token, "
            "expires_at) VALUES (:hash, :org, :caps, :session, :csrf, now() + :lasting) RETURNING expires_at",
            {"hash": _hash(cookie), "org": organization_id, "caps": sorted(capabilities), "session": session_id,
             "csrf": csrf, "lasting": lasting})
        return cookie, PortalSession(organization_id, capabilities, csrf, session_id, rows[0]["expires_at"])

    async def session(self, cookie: str) -> PortalSession | None:
        """The live session of a cookie value, or None (unknown, expired or revoked)."""
        rows = await self._store._rows(
            "SELECT organization_id, capabilities, csrf_token, session_id, expires_at FROM {s}.portal_sessions "
            "WHERE token_hash = :hash AND revoked_at IS NULL AND expires_at > now()", {"hash": _hash(cookie)})
        if not rows:
            return None
        row = rows[0]
        known = {c.value for c in ALL_CAPABILITIES}
        return PortalSession(row["organization_id"], frozenset(Capability(c) for c in row["capabilities"]
                                                               if c in known),
                             row["csrf_token"], row["session_id"], row["expires_at"])

    async def end_session(self, cookie: str) -> None:
        await self._store._rows("UPDATE {s}.portal_sessions SET revoked_at = now() WHERE token_hash = :hash "
                                "AND revoked_at IS NULL", {"hash": _hash(cookie)})

    async def revoke(self, organization_id: str, session_id: str) -> dict[str, int]:
        """End every session and unused link of ``session_id`` in the organization, at once."""
        params = {"org": organization_id, "session": session_id}
        links = await self._store._rows(
            "UPDATE {s}.portal_links SET revoked_at = now() WHERE organization_id = :org AND session_id = :session "
            "AND revoked_at IS NULL AND used_at IS NULL RETURNING id", params)
        sessions = await self._store._rows(
            "UPDATE {s}.portal_sessions SET revoked_at = now() WHERE organization_id = :org "
            "AND session_id = :session AND revoked_at IS NULL RETURNING id", params)
        return {"links": len(links), "sessions": len(sessions)}
