"""Portal links and sessions: issued, spent once, looked up, revoked; and the key links are signed with.

A link's row is written when it is issued and marked used when it is exchanged, in one
``UPDATE ... WHERE used_at IS NULL``, so two tabs racing with the same link cannot both win.
A session is a random cookie value of which only the SHA-256 is kept, with the organization
(none for an operator), the capabilities, the CSRF token and the expiry.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from secrets import token_urlsafe

from publisher.store.reports import ReportStore
from publisher.store.rows import PortalSessionRow


def _hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


class PortalStore(ReportStore):
    """The portal's rows."""

    async def _after_migrations(self) -> None:
        await super()._after_migrations()
        if self.keyring is not None:  # links are signed with a key derived from it: none is kept in clear
            await self._rows("DELETE FROM {s}.portal_signing_keys RETURNING id")

    async def portal_signing_key(self) -> str:
        """The key portal links are signed with when ``[portal] signing_key`` is unset: derived from the
        store's keyring when it has one (so no dump holds it), else kept in the store, made on first use
        (one per store, so every API process agrees)."""
        if self.keyring is not None:
            return self.keyring.derive("portal link signing")
        rows = await self._rows(
            "INSERT INTO {s}.portal_signing_keys (id, key) VALUES (1, :key) ON CONFLICT (id) DO UPDATE "
            "SET key = {s}.portal_signing_keys.key RETURNING key", {"key": token_urlsafe(48)})
        return str(rows[0]["key"])

    async def issue_portal_link(self, link_id: str, organization_id: str, capabilities: list[str],
                                expires_at: datetime, session_id: str | None) -> None:
        await self._rows(
            "INSERT INTO {s}.portal_links (id, organization_id, capabilities, session_id, expires_at) "
            "VALUES (:id, :org, :caps, :session, :expires)",
            {"id": link_id, "org": organization_id, "caps": capabilities, "session": session_id,
             "expires": expires_at})

    async def spend_portal_link(self, link_id: str, organization_id: str) -> tuple[list[str], str | None] | None:
        """Mark the link used: the capabilities and session id stored with it when it was issued (never
        those a token claims); None when it was already used, revoked, has expired or never existed."""
        rows = await self._rows(
            "UPDATE {s}.portal_links SET used_at = now() WHERE id = :id AND organization_id = :org "
            "AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() RETURNING capabilities, session_id",
            {"id": link_id, "org": organization_id})
        return (list(rows[0]["capabilities"]), rows[0]["session_id"]) if rows else None

    async def open_portal_session(self, organization_id: str | None, capabilities: list[str], lasting: timedelta,
                                  session_id: str | None = None) -> tuple[str, PortalSessionRow]:
        """A new session (``organization_id`` None: an operator's); the cookie value and the session."""
        cookie, csrf = token_urlsafe(32), token_urlsafe(24)
        rows = await self._rows(
            "INSERT INTO {s}.portal_sessions (token_hash, organization_id, capabilities, session_id, csrf_token, "
            "expires_at) VALUES (:hash, :org, :caps, :session, :csrf, now() + :lasting) RETURNING expires_at",
            {"hash": _hash(cookie), "org": organization_id, "caps": capabilities, "session": session_id,
             "csrf": csrf, "lasting": lasting})
        return cookie, PortalSessionRow(organization_id, capabilities, csrf, session_id, rows[0]["expires_at"])

    async def portal_session(self, cookie: str) -> PortalSessionRow | None:
        """The live session of a cookie value, or None (unknown, expired or revoked)."""
        rows = await self._rows(
            "SELECT organization_id, capabilities, csrf_token, session_id, expires_at FROM {s}.portal_sessions "
            "WHERE token_hash = :hash AND revoked_at IS NULL AND expires_at > now()", {"hash": _hash(cookie)})
        return PortalSessionRow(**rows[0]) if rows else None

    async def end_portal_session(self, cookie: str) -> None:
        await self._rows("UPDATE {s}.portal_sessions SET revoked_at = now() WHERE token_hash = :hash "
                         "AND revoked_at IS NULL", {"hash": _hash(cookie)})

    async def revoke_portal_session_id(self, organization_id: str, session_id: str) -> tuple[int, int]:
        """End every unused link and open session of ``session_id`` in the organization; how many of each."""
        params = {"org": organization_id, "session": session_id}
        links = await self._rows(
            "UPDATE {s}.portal_links SET revoked_at = now() WHERE organization_id = :org AND session_id = :session "
            "AND revoked_at IS NULL AND used_at IS NULL RETURNING id", params)
        sessions = await self._rows(
            "UPDATE {s}.portal_sessions SET revoked_at = now() WHERE organization_id = :org "
            "AND session_id = :session AND revoked_at IS NULL RETURNING id", params)
        return len(links), len(sessions)
