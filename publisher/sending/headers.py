"""HTTP header rules shared by every tenant: which custom headers an integration may set, and how
much of a receiver's response headers the attempt log keeps. Pure functions, no I/O.

Custom headers are chosen by whoever manages an integration, so none of them may change how the
request is framed or routed (a ``Transfer-Encoding`` next to walhook's ``Content-Length`` is request
smuggling at any proxy on the way), nor pass for walhook's own signature headers.

Response headers are chosen by the receiver, which may be hostile: every one of them would be
stored with every attempt, in the store all tenants share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from models.headers import TRACEPARENT

# Framing, hop-by-hop and routing headers (RFC 9110 / 9112), and walhook's own.
RESERVED_HEADERS = frozenset({
    "transfer-encoding", "content-length", "connection", "keep-alive", "upgrade", "te", "trailer",
    "expect", "host", "content-encoding", "content-type", "user-agent",
})
RESERVED_PREFIXES = ("proxy-", "webhook-")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
MAX_HEADER_VALUE = 1024

# The attempt log keeps at most this much of a response's headers (the body has its own 16 KB cap).
MAX_RESPONSE_HEADERS = 64
MAX_RESPONSE_HEADER_BYTES = 16 * 1024
OMITTED = "(omitted)"  # not a valid header name, so it cannot be mistaken for one the receiver sent


def is_reserved(name: str) -> bool:
    """True for a header name an integration may not set (any case)."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES)


def custom_header_problem(name: str, value: str) -> str | None:
    """Why an integration may not send ``name: value``, or None when it may."""
    if not _HEADER_NAME.fullmatch(name):
        return f"header name {name!r} is not allowed (letters, digits and '-', at most 64)"
    if is_reserved(name):
        return (f"header name {name!r} is reserved (framing, hop-by-hop, proxy-* and webhook-* headers "
                f"are set by walhook)")
    if len(value) > MAX_HEADER_VALUE or any(ch in value for ch in "\r\n\x00"):
        return f"header {name!r}: value over {MAX_HEADER_VALUE} characters or contains a line break"
    return None


HIDDEN = "(hidden)"
"""What stands for a custom header's value where it is not shown: it may hold a receiver's credentials."""


def hiding_custom_values(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every value an integration's manager chose hidden: walhook's own headers
    (``webhook-*``, ``content-type``, ``user-agent``, and the ``traceparent`` an integration opts in to) are kept,
    since they carry nothing secret."""
    return {name: value if is_reserved(name) or name == TRACEPARENT else HIDDEN for name, value in headers.items()}


def without_reserved(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` less reserved names: a last guard for integrations stored before a name was reserved."""
    return {name: value for name, value in headers.items() if not is_reserved(name)}


def capped_response_headers(headers: Mapping[str, str], max_count: int = MAX_RESPONSE_HEADERS,
                            max_bytes: int = MAX_RESPONSE_HEADER_BYTES) -> dict[str, str] | None:
    """The response headers the attempt log stores: the first ``max_count`` that fit in ``max_bytes``.

    What is left out is counted under :data:`OMITTED`, so the log says it is incomplete. None for no
    headers (nothing to store).
    """
    kept: dict[str, str] = {}
    used = omitted = omitted_bytes = 0
    for name, value in headers.items():
        size = len(name.encode()) + len(value.encode())
        if len(kept) < max_count and used + size <= max_bytes:
            kept[name] = value
            used += size
        else:
            omitted += 1
            omitted_bytes += size
    if omitted:
        kept[OMITTED] = f"{omitted} headers ({omitted_bytes} bytes) over the attempt log's limit"
    return kept or None
