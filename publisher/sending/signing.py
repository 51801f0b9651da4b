"""Standard Webhooks signatures: pure functions of (secret, id, timestamp, body).

The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``, HMAC-SHA256 with the
base64-decoded secret, sent as ``v1,<base64 signature>``. With several active secrets
(a rotation overlap) the header carries one signature per secret, separated by spaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from functools import lru_cache

from models.errors import SecretError

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
# Active secrets per owner (an organization, or an integration with its own): each one is a signature in
# every request's header and an HMAC per attempt, so rotations must not pile them up.
MAX_ACTIVE_SECRETS = 3


def generate_secret(size: int = 32) -> str:
    """A new ``whsec_`` secret of ``size`` random bytes (24-64)."""
    if not 24 <= size <= 64:
        raise SecretError(f"secret size must be 24-64 bytes, not {size}")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The raw HMAC key of a ``whsec_`` secret (missing base64 padding tolerated); cached, every attempt needs it."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise SecretError("signing secret is not valid base64 after 'whsec_'") from exc
    if not key:
        raise SecretError("signing secret is empty")
    return key


def check_secret(secret: str) -> str:
    """``secret`` if it may be stored for signing: valid, and 24-64 bytes as Standard Webhooks requires.

    For secrets given by a person (generated ones always fit). Stored secrets are not re-checked
    when signing, so a secret stored before this check keeps working until it is rotated.
    """
    size = len(secret_key(secret))
    if not MIN_SECRET_BYTES <= size <= MAX_SECRET_BYTES:
        raise SecretError(f"signing secret is {size} bytes; Standard Webhooks requires {MIN_SECRET_BYTES} to "
                          f"{MAX_SECRET_BYTES} (generate one with: openssl rand -base64 32)")
    return secret


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one webhook attempt."""
    if "." in msg_id:
        raise SecretError("webhook-id must not contain '.'")
    digest = hmac.digest(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(active_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in active_secrets)


def webhook_headers(active_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(active_secrets, msg_id, timestamp, body),
    }
