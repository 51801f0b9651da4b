"""Operational events: webhooks about the webhooks (an integration disabled, retries exhausted, a job ended,
a secret rotated). Pure: what they are called, what they carry, and how one becomes a Kafka record.

The store announces them (``operational_events``, filled by triggers in the same transaction as the
change they describe, see migration 83); a publisher relays each to the events topic
(``publisher.jobs.operational``), where it is routed and delivered like any event: signed, retried,
logged. They have an entity key of their own, which ``*`` never covers, so only integrations that name
``walhook/operational`` receive them, and the operator's endpoint (``[operational]``) receives every
organization's. An operational delivery that exhausts its retries announces nothing (no loops).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from models.events import iso_utc
from models.headers import ENTITY_KEY, ENTITY_PATH, EVENT_ID, OPERATION_TYPE, ORGANIZATION_ID

OPERATIONAL_KEY = "walhook/operational"
OPERATOR_ORGANIZATION = "_operator"  # the operator's endpoint's organization: no API id can start with "_"
KINDS = ("integration.disabled", "integration.recovered", "delivery.exhausted", "replay.finished",
         "replay.failed", "backfill.finished", "backfill.failed", "secret.rotated", "secret.overlap_ended")
"""What an integration may subscribe to under ``walhook/operational`` (``*``: all of them)."""


@dataclass(frozen=True)
class OperationalEvent:
    """One announced event, as the store keeps it until a publisher relays it."""

    id: int
    organization_id: str
    kind: str
    subject: str  # the thing it is about, as a path: integrations/7, deliveries/9, replay-jobs/3, ...
    details: dict[str, Any]
    created_at: datetime

    @property
    def event_id(self) -> str:
        """Stable across relays: a record relayed twice is one webhook-id to the receiver."""
        return f"op_{self.id:016d}"


def event_body(event: OperationalEvent) -> dict[str, Any]:
    """The event as receivers get it: the entity event's shape, the details as the subject's properties."""
    stamp = iso_utc(int(event.created_at.timestamp() * 1_000_000))
    return {"eventTimestamp": stamp, "operationType": event.kind, "entityPath": event.subject,
            "entityId": event.subject.rpartition("/")[2], "entityKey": OPERATIONAL_KEY,
            "collectionPath": event.subject.rpartition("/")[0], "organizationId": event.organization_id,
            "data": {"value": {"key": event.subject, "properties": event.details, "createTime": stamp,
                               "updateTime": stamp}, "oldValue": None, "updateMask": None},
            "eventId": event.event_id, "transaction": None}


def record_of(event: OperationalEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The Kafka key, value and routing headers: keyed like an entity event, so one subject stays in order."""
    headers = [(EVENT_ID, event.event_id.encode()), (ORGANIZATION_ID, event.organization_id.encode()),
               (ENTITY_KEY, OPERATIONAL_KEY.encode()), (OPERATION_TYPE, event.kind.encode()),
               (ENTITY_PATH, event.subject.encode())]
    return f"{event.organization_id}|{event.subject}".encode(), orjson.dumps(event_body(event)), headers


def example(kind: str, organization_id: str, now: datetime) -> dict[str, Any]:
    """A sample of ``kind`` for the catalogue and the portal."""
    subject, details = _EXAMPLES[kind]
    return event_body(OperationalEvent(1, organization_id, kind, subject, details, now))


_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "integration.disabled": ("integrations/104729331", {"integration_id": 104729331, "url": "https://example.com/hook",
                                                         "reason": "the endpoint answered 410 Gone"}),
    "integration.recovered": ("integrations/104729331", {"integration_id": 104729331,
                                                          "url": "https://example.com/hook"}),
    "delivery.exhausted": ("deliveries/8812", {"delivery_id": 8812, "integration_id": 104729331,
                                               "webhook_id": "evt_00000000016F7C68_000000_i104729331",
                                               "entity_path": "docs/7", "attempts": 12}),
    "replay.finished": ("replay-jobs/31", {"job_id": 31, "integration_id": 104729331, "state": "done",
                                           "scanned": 5120, "scheduled": 40}),
    "replay.failed": ("replay-jobs/32", {"job_id": 32, "integration_id": 104729331, "state": "failed",
                                         "error": "replay from walhook.events failed: ..."}),
    "backfill.finished": ("backfills/5", {"backfill_id": 5, "table": "public.docs", "state": "done",
                                          "rows_published": 10000}),
    "backfill.failed": ("backfills/6", {"backfill_id": 6, "table": "public.docs", "state": "failed",
                                        "error": "..."}),
    "secret.rotated": ("integrations/104729331", {"integration_id": 104729331,
                                                   "previous_expires_at": "2026-12-08T12:00:00+00:00"}),
    "secret.overlap_ended": ("integrations/104729331", {"integration_id": 104729331,
                                                         "expired_at": "2026-12-08T12:00:00+00:00"}),
}
