"""Signing secrets encrypted at rest: AES-256-GCM with the owner bound as associated data (pure).

A ``Keyring`` holds the operator's keys (``[store] secret_keys``, each ``ID:BASE64``): the first
encrypts, every one decrypts, so a new key can be put first and the old ones rotated out with
``walhook secrets rotate-key``. A sealed secret is (key id, 12-byte random nonce, ciphertext with
its tag). The associated data names the organization and the integration (none for the
organization's own secret), so a ciphertext copied into another owner's row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from models.errors import SecretError

NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class Sealed:
    """A secret as the store keeps it."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


class SecretKeyMissing(SecretError):
    """A stored secret names a key id that is not configured."""


def parse_key(text: str) -> tuple[str, bytes]:
    """``"k2:BASE64"`` -> ``("k2", 32 bytes)``; the message names the key id, never the key."""
    key_id, colon, encoded = text.partition(":")
    if not colon or not _KEY_ID.match(key_id):
        raise ValueError("each key is ID:BASE64, the id 1-32 letters, digits, '.', '_' or '-'")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"key {key_id!r} is not valid base64") from exc
    if len(key) != 32:
        raise ValueError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs 32 (e.g. `walhook secrets new-key`)")
    return key_id, key


def new_key(key_id: str) -> str:
    """A fresh random key in the form ``[store] secret_keys`` takes."""
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def associated_data(organization_id: str, integration_id: int | None, purpose: str = "signing secret") -> bytes:
    """What a ciphertext is bound to: what it is and its owner. The lengths keep ``a|b`` and ``a`` + ``|b``
    apart; the purpose keeps a sealed value of one kind from opening as another."""
    owner = f"{len(organization_id)}:{organization_id}|{'' if integration_id is None else integration_id}"
    return f"walhook {purpose} v1|".encode() + owner.encode()


class Keyring:
    """The configured keys, first one current. Built from ``[store] secret_keys``."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        parsed = [parse_key(text) for text in keys]
        self.current = parsed[0][0]
        self._keys = dict(parsed)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in parsed}
        if len(self._ciphers) != len(parsed):
            raise ValueError("two keys have the same id")

    def derive(self, purpose: str) -> str:
        """A key for ``purpose`` derived from the current key (HKDF-SHA256): kept nowhere, so a dump of
        the store cannot reveal it. A new current key derives a new one."""
        material = self._keys[self.current]
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"walhook {purpose} v1".encode())
        return base64.urlsafe_b64encode(derived.derive(material)).decode()

    def seal(self, secret: str, organization_id: str, integration_id: int | None,
             purpose: str = "signing secret") -> Sealed:
        nonce = os.urandom(NONCE_BYTES)  # random per value: a key seals far fewer than 2**32 secrets
        ciphertext = self._ciphers[self.current].encrypt(
            nonce, secret.encode(), associated_data(organization_id, integration_id, purpose))
        return Sealed(self.current, nonce, ciphertext)

    def unseal(self, sealed: Sealed, organization_id: str, integration_id: int | None,
               purpose: str = "signing secret") -> str:
        """The secret; ``SecretKeyMissing`` or ``SecretError`` naming the owner and the key id otherwise."""
        owner = f"organization {organization_id!r}" + (f", integration {integration_id}" if integration_id else "")
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SecretKeyMissing(f"the {purpose} of {owner} is encrypted with key id {sealed.key_id!r}, "
                                   f"which is not in [store] secret_keys (configured: {', '.join(self._ciphers)})")
        try:
            plain = cipher.decrypt(sealed.nonce, sealed.ciphertext,
                                   associated_data(organization_id, integration_id, purpose))
        except InvalidTag as exc:
            raise SecretError(f"the {purpose} of {owner} does not decrypt with key {sealed.key_id!r}: a "
                              "different key under the same id, or a value copied from another row") from exc
        return plain.decode()
