"""walhook's own tables: organizations, signing secrets, integrations, deliveries, attempts and replay jobs.

SQLAlchemy 2 (async, psycopg 3) on Postgres, in a schema of its own (``[store] schema``,
default ``walhook``) so it can share the source database without touching the app's
tables. The schema is versioned (``models.migrations``). One module per area, each adding
its methods to the one ``Store`` a process opens:

* ``engine``: connection, the two statement styles, errors translated once;
* ``tenants``: organizations, signing secrets, API keys;
* ``integrations``: integrations, their config and health;
* ``deliveries``: the life of a delivery (logged after its first attempt, or waiting: claimed, attempted,
  scheduled again);
* ``jobs``: replay jobs;
* ``backfills``: backfill jobs (run by the capture process);
* ``reports``: reading the delivery log, and the figures metrics and the portal report;
* ``portal``: portal links and sessions.
* ``retention``: the attempts log's day partitions, pruning, and the log's size;
* ``usage``: each organization's manual actions and the log it wrote lately.

A *delivery* is one event for one integration - the "webhook job" - with its status, attempt
count and next attempt time. An *attempt* is one HTTP request of a delivery, logged with
what was sent and what came back. Rows come back as the dataclasses of ``rows``.
"""

from __future__ import annotations

from models.errors import StoreError
from models.jobs import Backfill
from models.secretbox import Keyring
from models.settings import StoreSettings
from publisher.store.operational import OperationalStore
from publisher.store.portal import PortalStore
from publisher.store.retention import LogSize, Pruned, RetentionStore
from publisher.store.rows import (
    ApiKey,
    Attempt,
    AttemptRecord,
    Delivery,
    DeliveryRow,
    Integration,
    NewDelivery,
    Organization,
    ReplayJob,
    Scheduled,
    utcnow,
)
from publisher.store.tenants import DEFAULT_ROTATION_OVERLAP, key_hash
from publisher.store.usage import Usage

__all__ = ["DEFAULT_ROTATION_OVERLAP", "ApiKey", "Attempt", "AttemptRecord", "Backfill", "Delivery", "DeliveryRow",
           "Integration", "LogSize", "NewDelivery", "Organization", "Pruned", "ReplayJob", "Scheduled", "Store",
           "Usage", "key_hash", "store_for", "utcnow"]


class Store(PortalStore, RetentionStore, OperationalStore):
    """Access to walhook's tables. ``open`` migrates the schema; ``close`` is idempotent."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self


def store_for(settings: StoreSettings) -> Store:
    """The store a process opens, with its keyring; refuses plain-text secrets nobody asked for."""
    if not settings.secret_keys and not settings.plaintext_secrets:
        raise StoreError("no [store] secret_keys configured: signing secrets would be stored in plain text; add a key "
                         "(`walhook secrets new-key` makes one) or set [store] plaintext_secrets = true")
    keyring = Keyring(settings.secret_keys) if settings.secret_keys else None
    return Store(settings.dsn, settings.schema_name, keyring)

