"""Rotating a signing secret, in one transaction: the cap on active secrets and the overlap.

An *owner* is an organization (its secrets sign for every integration without secrets of its own)
or one integration. Each active secret is one more signature in every request's header and one
more HMAC per attempt, so an owner holds at most :data:`~publisher.signing.MAX_ACTIVE_SECRETS`;
a rotation that would pass that is refused, and one without overlap is always possible.

An integration's first own secret would otherwise end its organization's secrets for it at once,
and receivers that verify with them would fail. So that rotation copies the organization's
newest active secrets as the integration's, ending with the overlap (or sooner, when the
organization's ended sooner).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from publisher.errors import Conflict, StoreError
from publisher.signing import MAX_ACTIVE_SECRETS

_ACTIVE = "(expires_at IS NULL OR expires_at > now())"
_LOCK = "SELECT 1 FROM {s}.organizations WHERE id = :org FOR UPDATE"  # one rotation per organization at a time
_COUNT = ("SELECT count(*) AS n, min(expires_at) AS oldest FROM {s}.signing_secrets "
          f"WHERE organization_id = :org AND {{owner}} AND {_ACTIVE}")
_EXPIRE = ("UPDATE {s}.signing_secrets SET expires_at = now() + :overlap WHERE organization_id = :org "
           "AND {owner} AND (expires_at IS NULL OR expires_at > now() + :overlap)")
# LEAST ignores NULL: a secret without expiry ends with the overlap, an earlier expiry stays.
_INHERIT = ("INSERT INTO {s}.signing_secrets (organization_id, integration_id, secret, expires_at) "
            "SELECT organization_id, :integration, secret, LEAST(expires_at, now() + :overlap) FROM ("
            " SELECT * FROM {s}.signing_secrets WHERE organization_id = :org AND integration_id IS NULL"
            f" AND {_ACTIVE} ORDER BY id DESC LIMIT :keep) newest ORDER BY id")
_INSERT = ("INSERT INTO {s}.signing_secrets (organization_id, integration_id, secret) "
           "VALUES (:org, :integration, :secret)")


def rotation_refusal(owner: str, active: int, overlap: timedelta, oldest_expiry: datetime | None) -> str | None:
    """Why a rotation of ``owner`` (holding ``active`` secrets) would hold too many, or None (pure)."""
    if overlap <= timedelta(0) or active + 1 <= MAX_ACTIVE_SECRETS:
        return None
    until = f"; the oldest expires at {oldest_expiry:%Y-%m-%d %H:%M:%S %Z}" if oldest_expiry else ""
    return (f"{owner} already has {active} active signing secrets (at most {MAX_ACTIVE_SECRETS}){until}; "
            f"wait for it, or rotate with overlap_hours 0, which ends the others now")


async def rotate(engine: AsyncEngine, schema: str, organization_id: str, integration_id: int | None,
                 overlap: timedelta, secret: str) -> None:
    """Add ``secret`` for the owner; its other secrets keep signing for ``overlap``. ``Conflict`` past the cap."""
    params = {"org": organization_id, "integration": integration_id, "overlap": overlap, "secret": secret}
    owner_sql = "integration_id = :integration" if integration_id is not None else "integration_id IS NULL"
    owner = f"integration {integration_id}" if integration_id is not None else f"organization {organization_id}"
    try:
        async with engine.begin() as conn:
            run = _runner(conn, schema, owner_sql)
            await run(_LOCK, params)
            (count,) = await run(_COUNT, params)
            if (refusal := rotation_refusal(owner, count["n"], overlap, count["oldest"])) is not None:
                raise Conflict(refusal)
            await run(_EXPIRE, params)
            if integration_id is not None and count["n"] == 0 and overlap > timedelta(0):
                await run(_INHERIT, {**params, "keep": MAX_ACTIVE_SECRETS - 1})
            await run(_INSERT, params)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot rotate the secret of {owner}: {getattr(exc, 'orig', None) or exc}") from exc


def _runner(conn: AsyncConnection, schema: str, owner_sql: str):  # type: ignore[no-untyped-def]
    async def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = await conn.execute(text(sql.replace("{owner}", owner_sql).replace("{s}", schema)), params)
        return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
    return run
