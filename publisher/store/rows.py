"""What the store hands out: typed rows, one dataclass per thing a caller reads or writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from publisher.routing.matching import Subscription


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Organization:
    id: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed: never the key itself, which is shown once and stored as a hash."""

    id: int
    organization_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class Integration:
    """A webhook integration with the secrets its deliveries are signed with."""

    id: int
    organization_id: str
    name: str
    url: str
    subscriptions: list[Subscription]
    secrets: list[str]
    enabled: bool = True
    disabled_reason: str | None = None
    environment: str | None = None
    ordering: str = "entity"
    batch_size: int = 1
    rate_limit: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    failing_since: datetime | None = None
    concurrency: int | None = None  # requests in flight; None: the publisher's concurrency_per_integration
    disabled_at: datetime | None = None
    catching_up: bool = False  # a replay since it was disabled is running: live changes wait behind it
    updated_at: datetime | None = None
    send_traceparent: bool = False  # add the W3C traceparent of the attempt to its requests ([tracing] on)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "organization": self.organization_id, "name": self.name, "url": self.url,
                "events": [subscription.describe() for subscription in self.subscriptions], "enabled": self.enabled,
                "disabled_reason": self.disabled_reason, "environment": self.environment,
                "ordering": self.ordering, "batch_size": self.batch_size, "rate_limit": self.rate_limit,
                "concurrency": self.concurrency, "headers": self.headers, "catching_up": self.catching_up,
                "send_traceparent": self.send_traceparent}


@dataclass(frozen=True)
class NewDelivery:
    """One event for one integration, about to be recorded."""

    integration_id: int
    organization_id: str
    event_id: str
    webhook_id: str
    entity_key: str
    entity_path: str
    operation: str
    body: bytes
    source_partition: int | None = None
    source_offset: int | None = None
    traceparent: str | None = None  # [tracing] on: the routing span's context (publisher.tracing); not stored


@dataclass(frozen=True)
class Delivery:
    """A delivery ready to be attempted."""

    id: int
    integration_id: int
    webhook_id: str
    entity_path: str
    body: bytes
    attempts: int
    created_at: datetime
    trigger: str = "scheduled"  # scheduled (from the stream), manual (redeliver, recover) or replay
    # A live delivery, just consumed: nothing of it is in the store yet (``id`` is 0) until its first
    # attempt is logged, or it waits there. What the store will keep of it.
    live: NewDelivery | None = None

    @classmethod
    def of_live(cls, new: NewDelivery) -> Delivery:
        """A just-consumed delivery, before the store has anything of it."""
        return cls(0, new.integration_id, new.webhook_id, new.entity_path, new.body, 0, utcnow(), live=new)


@dataclass(frozen=True)
class DeliveryRow:
    """A delivery as the log of webhook jobs shows it (without its body)."""

    id: int
    integration_id: int
    organization_id: str
    event_id: str
    webhook_id: str
    entity_key: str
    entity_path: str
    operation: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    trigger: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Scheduled:
    """A delivery that was (re)scheduled by redeliver, recover or replay."""

    id: int
    event_id: str
    webhook_id: str


@dataclass(frozen=True)
class _AttemptFields:
    """What the log of attempts keeps of one HTTP request of a delivery."""

    delivery_id: int
    integration_id: int
    number: int
    trigger: str
    started_at: datetime
    url: str
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None
    duration_ms: float
    error: str | None


@dataclass(frozen=True)
class AttemptRecord(_AttemptFields):
    """The outcome of one attempt and what it does to its delivery."""

    status: str  # the delivery's status afterwards: pending, succeeded or failed
    next_attempt_at: datetime | None
    live: NewDelivery | None = None  # the first attempt of a live delivery: its row is written with it


@dataclass(frozen=True)
class Attempt(_AttemptFields):
    """One logged attempt, as read back."""

    id: int


@dataclass(frozen=True)
class ReplayJob:
    """A replay of an integration's events from Kafka, run by a publisher in the background.

    ``end_positions`` (partition -> offset) is where it stops, taken when it started;
    ``progress`` (partition -> next offset to read) is how far it has scanned and scheduled.
    """

    id: int
    organization_id: str
    integration_id: int
    state: str  # running, done, failed or cancelled
    reason: str  # requested (API, CLI) or enabled (catching up from the moment it was disabled)
    start_offset: int | None
    since: datetime | None
    end_positions: dict[int, int] | None
    progress: dict[int, int]
    scanned: int
    scheduled: int
    error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state != "running"


@dataclass(frozen=True)
class PortalSessionRow:
    """A portal session: one organization's, or an operator's (``organization_id`` None)."""

    organization_id: str | None
    capabilities: list[str]
    csrf_token: str
    session_id: str | None
    expires_at: datetime


@dataclass(frozen=True)
class IntegrationFigures:
    """An integration's deliveries of the last 24 hours by status, its backlog, and its last attempt."""

    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    last_attempt_at: datetime | None = None
    last_status: int | None = None


@dataclass(frozen=True)
class HourCounts:
    """Deliveries recorded in one hour, by their status now."""

    start: datetime
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretPeriod:
    """When an active signing secret was made and when it stops signing (None: when it is rotated)."""

    integration_id: int | None
    created_at: datetime
    expires_at: datetime | None


