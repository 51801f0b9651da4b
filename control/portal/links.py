"""Portal links, the pure part: what a link grants and how its token is signed and read.

A portal link is a URL carrying a signed token: the organization, the capabilities, the
expiry, an optional session id and a random link id (``jti``). The signature (HMAC through
``itsdangerous``) makes the token unforgeable; the link's row in the store makes it single-use
and revocable. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from secrets import token_urlsafe

from itsdangerous import BadSignature, URLSafeSerializer

from control.actor import Capability
from control.errors import LinkRefused

DEFAULT_EXPIRY = timedelta(hours=1)
MAX_EXPIRY = timedelta(hours=24)
_SALT = "walhook.portal.link"


@dataclass(frozen=True)
class LinkGrant:
    """What a link grants; ``expires_at`` is when the link (not the session it opens) stops working."""

    link_id: str
    organization_id: str
    capabilities: frozenset[Capability]
    expires_at: datetime
    session_id: str | None = None

    def claims(self) -> dict[str, object]:
        return {"j": self.link_id, "o": self.organization_id, "c": sorted(self.capabilities),
                "e": int(self.expires_at.timestamp()), "s": self.session_id}


def capabilities_of(names: Sequence[str]) -> frozenset[Capability]:
    """``["manage_integrations", ...]`` as capabilities (view is always included); unknown names are refused."""
    try:
        return frozenset({Capability.VIEW, *(Capability(name) for name in names)})
    except ValueError as exc:
        known = ", ".join(c.value for c in Capability)
        raise LinkRefused(f"unknown capability in {list(names)!r}; use {known}") from exc


def new_grant(organization_id: str, capabilities: frozenset[Capability], expires_in: timedelta = DEFAULT_EXPIRY,
              session_id: str | None = None, now: datetime | None = None) -> LinkGrant:
    """A grant with a fresh link id, expiring ``expires_in`` from ``now`` (at most 24 hours)."""
    if not timedelta(0) < expires_in <= MAX_EXPIRY:
        raise LinkRefused(f"a portal link expires within 24 hours, not {expires_in}")
    now = now or datetime.now(UTC)
    return LinkGrant(token_urlsafe(18), organization_id, capabilities, (now + expires_in).replace(microsecond=0),
                     session_id)


def sign(grant: LinkGrant, key: str) -> str:
    """The token of a grant, signed with ``key``."""
    return URLSafeSerializer(key, salt=_SALT).dumps(grant.claims())


def read(token: str, key: str, now: datetime | None = None) -> LinkGrant:
    """The grant a token carries; ``LinkRefused`` if the signature does not hold or the link has expired."""
    try:
        claims = URLSafeSerializer(key, salt=_SALT).loads(token)
        grant = LinkGrant(str(claims["j"]), str(claims["o"]), capabilities_of(list(claims["c"])),
                          datetime.fromtimestamp(int(claims["e"]), UTC), claims.get("s"))
    except (BadSignature, KeyError, TypeError, ValueError) as exc:
        raise LinkRefused("this portal link is not valid") from exc
    if grant.expires_at <= (now or datetime.now(UTC)):
        raise LinkRefused("this portal link has expired; ask for a new one")
    return grant
