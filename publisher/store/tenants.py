"""Organizations, their signing secrets and their API keys.

Signing secrets are sealed with the store's ``Keyring`` (``models.secretbox``) when one is
configured: a row then holds the key id, the nonce and the ciphertext, and no ``secret``. At open
every key id in use must be configured and decrypt, and plain rows left from before a key was
configured are sealed; ``reseal_secrets`` moves every row to the current key, in batches.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta
from secrets import token_hex, token_urlsafe
from typing import Any

from models.errors import NotFound, SecretError
from models.secretbox import Sealed, SecretKeyMissing
from publisher.sending.signing import check_secret, generate_secret
from publisher.store.engine import StoreEngine
from publisher.store.rotation import rotate
from publisher.store.rows import ApiKey, Organization, SecretPeriod

DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)

_KEY_COLUMNS = "id, organization_id, name, prefix, created_at, last_used_at, revoked_at"
_SECRET_COLUMNS = "id, organization_id, integration_id, secret, key_id, nonce, ciphertext"
RESEAL_BATCH = 200


class TenantStore(StoreEngine):
    """Organizations, secrets and API keys."""

    async def add_organization(self, organization_id: str, secret: str | None = None) -> str:
        """Create an organization with a signing secret (generated unless given); returns the secret."""
        secret = check_secret(secret) if secret else generate_secret()  # refused before anything is stored
        await self._rows("INSERT INTO {s}.organizations (id) VALUES (:org)", {"org": organization_id})
        await self._rows("INSERT INTO {s}.signing_secrets (organization_id, secret, key_id, nonce, ciphertext) "
                         "VALUES (:org, :secret, :key_id, :nonce, :ciphertext)",
                         {"org": organization_id, **self._stored(secret, organization_id, None)})
        return secret

    async def organization_exists(self, organization_id: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM {s}.organizations WHERE id = :org", {"org": organization_id}))

    async def organizations(self, after: str | None = None, limit: int | None = None) -> list[Organization]:
        """Organizations by id; ``after`` and ``limit`` read one page (the next one starts after its last id)."""
        return [Organization(**row) for row in await self._rows(
            "SELECT id, created_at FROM {s}.organizations WHERE CAST(:after AS text) IS NULL OR id > :after "
            "ORDER BY id LIMIT :limit", {"after": after, "limit": limit})]

    async def organization(self, organization_id: str) -> Organization:
        rows = await self._rows("SELECT id, created_at FROM {s}.organizations WHERE id = :org",
                                {"org": organization_id})
        if not rows:
            raise NotFound(f"organization {organization_id!r} does not exist")
        return Organization(**rows[0])

    async def delete_organization(self, organization_id: str) -> None:
        """Delete an organization with its secrets, keys, integrations and their deliveries."""
        if not await self._rows("DELETE FROM {s}.organizations WHERE id = :org RETURNING id", {"org": organization_id}):
            raise NotFound(f"organization {organization_id!r} does not exist")

    async def rotate_secret(self, organization_id: str, integration_id: int | None = None,
                            overlap: timedelta = DEFAULT_ROTATION_OVERLAP, secret: str | None = None) -> str:
        """A new secret for the organization (or one integration); the old ones keep signing for ``overlap``.

        ``Conflict`` when the owner would hold more than ``MAX_ACTIVE_SECRETS`` (``publisher.store.rotation``).
        """
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        secret = check_secret(secret) if secret else generate_secret()
        await rotate(self.engine, self._s, organization_id, integration_id, overlap, secret, self._stored,
                     self._revealed)
        # Secrets are part of an integration's config: its publishers' copies must notice the change.
        await self._rows("UPDATE {s}.integrations SET updated_at = now() WHERE organization_id = :org "
                         "AND (CAST(:integration AS bigint) IS NULL OR id = :integration)",
                         {"org": organization_id, "integration": integration_id})
        return secret

    async def secret_periods(self, organization_id: str, integration_id: int) -> list[SecretPeriod]:
        """The active secrets signing the integration's webhooks (its own, else the organization's), newest first."""
        rows = await self._rows(
            "SELECT integration_id, created_at, expires_at FROM {s}.signing_secrets WHERE organization_id = :org "
            "AND (integration_id = :id OR integration_id IS NULL) AND (expires_at IS NULL OR expires_at > now()) "
            "ORDER BY id DESC", {"org": organization_id, "id": integration_id})
        periods = [SecretPeriod(**row) for row in rows]
        return [p for p in periods if p.integration_id is not None] or periods

    async def organization_secrets(self, organization_id: str) -> list[str]:
        """The organization's active signing secrets, newest first: those of an integration without its own."""
        return (await self._active_secrets([organization_id])).get((organization_id, None), [])

    async def _active_secrets(self, organization_ids: Sequence[str]) -> dict[tuple[str, int | None], list[str]]:
        rows = await self._rows(
            f"SELECT {_SECRET_COLUMNS} FROM {{s}}.signing_secrets "
            "WHERE organization_id = ANY(:orgs) AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
            {"orgs": list(organization_ids)})
        secrets: dict[tuple[str, int | None], list[str]] = {}
        for row in rows:
            secrets.setdefault((row["organization_id"], row["integration_id"]), []).append(self._revealed(row))
        return secrets

    # Secrets at rest

    def _stored(self, secret: str, organization_id: str, integration_id: int | None) -> dict[str, object]:
        """The columns of a secret as it is stored: sealed with the current key, or plain without a keyring."""
        if self.keyring is None:
            return {"secret": secret, "key_id": None, "nonce": None, "ciphertext": None}
        sealed = self.keyring.seal(secret, organization_id, integration_id)
        return {"secret": None, "key_id": sealed.key_id, "nonce": sealed.nonce, "ciphertext": sealed.ciphertext}

    def _revealed(self, row: dict[str, Any]) -> str:
        organization_id, integration_id = str(row["organization_id"]), row["integration_id"]
        if row["ciphertext"] is None:
            return str(row["secret"])
        if self.keyring is None:
            raise SecretKeyMissing(f"the signing secret of organization {organization_id!r} is encrypted with key id "
                                   f"{row['key_id']!r}, but no [store] secret_keys are configured")
        sealed = Sealed(str(row["key_id"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
        return self.keyring.unseal(sealed, organization_id, integration_id)

    async def _after_migrations(self) -> None:
        await super()._after_migrations()
        # One sealed row per key id in use: a key that is missing or wrong is named now, not at the first delivery.
        for row in await self._rows(f"SELECT DISTINCT ON (key_id) {_SECRET_COLUMNS} FROM {{s}}.signing_secrets "
                                    "WHERE key_id IS NOT NULL ORDER BY key_id, id"):
            self._revealed(row)
        if self.keyring is not None:
            await self.reseal_secrets(only_plain=True)

    async def reseal_secrets(self, only_plain: bool = False) -> int:
        """Seal every secret with the current key (plain ones only, with ``only_plain``); returns how many.

        Batch by batch, each in its own transaction: interrupted, it goes on from where it stopped when run
        again (rows already on the current key are not touched)."""
        if self.keyring is None:
            raise SecretError("no [store] secret_keys configured: there is no key to encrypt with")
        done = 0
        while True:
            where = "key_id IS NULL" if only_plain else "key_id IS DISTINCT FROM :current"
            rows = await self._rows(f"SELECT {_SECRET_COLUMNS} FROM {{s}}.signing_secrets WHERE {where} ORDER BY id "
                                    "LIMIT :limit", {"current": self.keyring.current, "limit": RESEAL_BATCH})
            if not rows:
                return done
            await self._reseal(rows)
            done += len(rows)

    async def _reseal(self, rows: list[dict[str, Any]]) -> None:
        updates = [{"id": row["id"], "old": row["key_id"],
                    **self._stored(self._revealed(row), str(row["organization_id"]), row["integration_id"])}
                   for row in rows]
        # The old key id in the WHERE: a row another process resealed meanwhile is left as it is.
        await self._many("UPDATE {s}.signing_secrets SET secret = NULL, key_id = :key_id, nonce = :nonce, "
                         "ciphertext = :ciphertext WHERE id = :id AND key_id IS NOT DISTINCT FROM :old", updates)

    # API keys: stored as a SHA-256 hash; the key itself is shown once, at creation.

    async def add_api_key(self, organization_id: str, name: str) -> tuple[ApiKey, str]:
        """A new key ``whk_<prefix>_<secret>``; returns its row and the key (never stored)."""
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        prefix, secret = token_hex(6), token_urlsafe(32)
        key = f"whk_{prefix}_{secret}"
        rows = await self._rows(
            "INSERT INTO {s}.api_keys (organization_id, name, prefix, key_hash) VALUES (:org, :name, :prefix, :hash) "
            f"RETURNING {_KEY_COLUMNS}", {"org": organization_id, "name": name, "prefix": prefix,
                                          "hash": key_hash(key)})
        return ApiKey(**rows[0]), key

    async def api_keys(self, organization_id: str) -> list[ApiKey]:
        return [ApiKey(**row) for row in await self._rows(
            f"SELECT {_KEY_COLUMNS} FROM {{s}}.api_keys WHERE organization_id = :org ORDER BY id",
            {"org": organization_id})]

    async def revoke_api_key(self, organization_id: str, key_id: int) -> None:
        if not await self._rows("UPDATE {s}.api_keys SET revoked_at = coalesce(revoked_at, now()) "
                                "WHERE id = :id AND organization_id = :org RETURNING id",
                                {"id": key_id, "org": organization_id}):
            raise NotFound(f"API key {key_id} does not exist")

    async def organization_of_key(self, key: str) -> str | None:
        """The organization a presented key belongs to, or None (compared in constant time)."""
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != "whk":
            return None
        rows = await self._rows("SELECT id, organization_id, key_hash FROM {s}.api_keys WHERE prefix = :prefix "
                                "AND revoked_at IS NULL", {"prefix": parts[1]})
        if not rows or not hmac.compare_digest(bytes(rows[0]["key_hash"]), key_hash(key)):
            return None  # the prefix is not secret: a failed check must not touch the key's row
        await self._rows("UPDATE {s}.api_keys SET last_used_at = now() WHERE id = :id", {"id": rows[0]["id"]})
        return str(rows[0]["organization_id"])


def key_hash(key: str) -> bytes:
    """API keys are long random strings, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).digest()
