"""The root of walhook's exception tree, and the errors every half shares.

::

    WalhookError
    ├── StoreError      the store database failed (capture's backfill jobs, delivery, the control plane)
    │   ├── NotFound    an organization, integration, delivery or job does not exist
    │   └── Conflict    it exists already, or a limit refuses one more
    ├── SecretError     a signing secret or a key of the store's keyring is malformed
    ├── ConfigError     the configuration is invalid (the message names the file and the key)
    ├── CdcError        capture (``cdc.errors``)
    ├── PublisherError  delivery (``publisher.errors``)
    ├── ControlError    the API and portal (``control.errors``)
    └── the CLI's own (``walhook.errors``)

Foreign errors (psycopg, aiokafka, aiohttp, pydantic) are translated once, at the boundary where
they are caught, with ``raise ... from exc`` so the cause stays visible.
"""


class WalhookError(Exception):
    """Base of every error walhook raises on purpose. The message is meant for a person."""


class StoreError(WalhookError):
    """The store database failed."""


class NotFound(StoreError):
    """The named organization, integration, delivery or job does not exist."""


class Conflict(StoreError):
    """It exists already, or a limit refuses one more (the message says which)."""


class SecretError(WalhookError):
    """A signing secret is not ``whsec_`` + base64 of 24-64 bytes, or a key of the store's keyring is wrong."""


class ConfigError(WalhookError):
    """The configuration is invalid; the message names the file and the bad key."""
