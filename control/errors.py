"""The control plane's branch of walhook's exception tree.

::

    WalhookError
    └── ControlError
        ├── PortalDenied     a portal request refused: shown as a page or fragment with its status
        │   └── SignInNeeded no session, or it ended (401)
        ├── LinkRefused      a portal link forged, malformed, expired, spent or revoked
        ├── Forbidden        the actor lacks the capability an action needs (403)
        └── RowsError        "only when" rows that do not say a condition (also a ``ValueError``)

The API answers the shared errors (``models.errors``: NotFound 404, Conflict 409, StoreError 503)
and the delivery half's (``publisher.errors``) through one table in ``control.api.app``.
"""

from __future__ import annotations

from models.errors import WalhookError


class ControlError(WalhookError):
    """Base of every error of the API and the portal."""


class PortalDenied(ControlError):
    """A portal request that is refused; rendered as a page (or fragment) with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SignInNeeded(PortalDenied):
    """The request needs a portal session and has none (never opened, signed out or expired)."""

    def __init__(self) -> None:
        super().__init__(401, "sign in first: open your portal link again, or sign in as an operator")


class LinkRefused(ControlError):
    """A portal link that is forged, malformed, expired, spent or revoked (the message says which)."""


class RowsError(ControlError, ValueError):
    """Rows that do not say a condition (a value without a property, from -> to without either end).

    Also a ``ValueError``: the portal reads a row's value the way it reads any typed value."""


class Forbidden(ControlError):
    """An action the actor may not take: a portal session whose link did not grant the capability (403)."""
