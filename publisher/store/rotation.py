"""Rotating a signing secret, in one transaction: the cap on active secrets and the overlap.

An *owner* is an organization (its secrets sign for every integration without secrets of its own)
or one integration. Each active secret is one more signature in every request's header and one
more HMAC per attempt, so an owner holds at most :data:`~publisher.sending.signing.MAX_ACTIVE_SECRETS`;
a rotation that would pass that is refused, and one without overlap is always possible.

An integration's first own secret would otherwise end its organization's secrets for it at once,
and receivers that verify with them would fail. So that rotation copies the organization's
newest active secrets as the integration's, ending with the overlap (or sooner, when the
organization's ended sooner). Those copies are sealed anew for the integration: a sealed secret is
bound to its owner (``models.secretbox``), so its ciphertext cannot simply be copied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.errors import Conflict, StoreError
from publisher.sending.signing import MAX_ACTIVE_SECRETS

_ACTIVE = "(expires_at IS NULL OR expires_at > now())"
_LOCK = "SELECT 1 FROM {s}.organizations WHERE id = :org FOR UPDATE"  # one rotation per organization at a time
_COUNT = ("SELECT count(*) AS n, min(expires_at) AS oldest FROM {s}.signing_secrets "
          f"WHERE organization_id = :org AND {{owner}} AND {_ACTIVE}")
_EXPIRE = ("UPDATE {s}.signing_secrets SET expires_at = now() + :overlap WHERE organization_id = :org "
           "AND {owner} AND (expires_at IS NULL OR expires_at > now() + :overlap)")
# LEAST ignores NULL: a secret without expiry ends with the overlap, an earlier expiry stays.
_INHERITED = ("SELECT * FROM (SELECT id, organization_id, integration_id, secret, key_id, nonce, ciphertext, "
              "LEAST(expires_at, now() + :overlap) AS expires_at FROM {s}.signing_secrets WHERE organization_id = :org "
              f"AND integration_id IS NULL AND {_ACTIVE} ORDER BY id DESC LIMIT :keep) newest ORDER BY id")
_INSERT = ("INSERT INTO {s}.signing_secrets (organization_id, integration_id, secret, key_id, nonce, ciphertext, "
           "expires_at) VALUES (:org, :integration, :secret, :key_id, :nonce, :ciphertext, :expires_at)")

Stored = Callable[[str, str, "int | None"], dict[str, Any]]  # (secret, organization, integration) -> its columns
Revealed = Callable[[dict[str, Any]], str]  # a signing_secrets row -> the secret


def rotation_refusal(owner: str, active: int, overlap: timedelta, oldest_expiry: datetime | None) -> str | None:
    """Why a rotation of ``owner`` (holding ``active`` secrets) would hold too many, or None (pure)."""
    if overlap <= timedelta(0) or active + 1 <= MAX_ACTIVE_SECRETS:
        return None
    until = f"; the oldest expires at {oldest_expiry:%Y-%m-%d %H:%M:%S %Z}" if oldest_expiry else ""
    return (f"{owner} already has {active} active signing secrets (at most {MAX_ACTIVE_SECRETS}){until}; "
            f"wait for it, or rotate with overlap_hours 0, which ends the others now")


async def rotate(engine: AsyncEngine, schema: str, organization_id: str, integration_id: int | None,
                 overlap: timedelta, secret: str, stored: Stored, revealed: Revealed) -> None:
    """Add ``secret`` for the owner; its other secrets keep signing for ``overlap``. ``Conflict`` past the cap.

    ``stored`` gives a secret's columns as the store keeps them (sealed, or plain), ``revealed`` reads one back."""
    params = {"org": organization_id, "integration": integration_id, "overlap": overlap, "expires_at": None,
              **stored(secret, organization_id, integration_id)}
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
                for row in await run(_INHERITED, {**params, "keep": MAX_ACTIVE_SECRETS - 1}):
                    await run(_INSERT, {**params, "expires_at": row["expires_at"],
                                        **stored(revealed(row), organization_id, integration_id)})
            await run(_INSERT, params)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot rotate the secret of {owner}: {getattr(exc, 'orig', None) or exc}") from exc


def _runner(conn: AsyncConnection, schema: str, owner_sql: str):  # type: ignore[no-untyped-def]
    async def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = await conn.execute(text(sql.replace("{owner}", owner_sql).replace("{s}", schema)), params)
        return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
    return run
