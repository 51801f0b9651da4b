"""Request and response bodies of the management API: validation lives here, in one place.

Every limit is explicit (lengths, counts, ranges), and a bad value is a 422 that names the
field. Secrets and API keys appear only in the ``*Created`` / ``SecretOut`` responses.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from publisher.errors import SubscriptionError
from publisher.routing.matching import SubscriptionItem, parse_items
from publisher.sending.headers import custom_header_problem

if TYPE_CHECKING:
    from models.settings import ApiSettings
    from publisher.store import Usage


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


MIN_RATE_LIMIT = 0.1
MAX_SUBSCRIPTION_LENGTH = 256


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """NUL cannot be stored in Postgres text: refuse it here, with the field's name."""
        if isinstance(data, dict):
            for name, value in data.items():
                if _has_nul(value):
                    raise ValueError(f"{name}: NUL characters are not allowed")
        return data


class OrganizationIn(_In):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$", description="your own id of the tenant")


class OrganizationOut(BaseModel):
    id: str
    created_at: datetime


class OrganizationCreated(OrganizationOut):
    secret: str = Field(description="the signing secret; shown once")


class KeyIn(_In):
    name: str = Field(min_length=1, max_length=200)


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the API key; shown once, stored only as a hash")


class SubscriptionIn(_In):
    """A subscription with conditions: delivered only when ``when`` holds on the event."""

    subscription: str = Field(min_length=1, max_length=MAX_SUBSCRIPTION_LENGTH, description="ENTITY_KEY:OPS")
    when: dict[str, Any] = Field(description='a condition, e.g. {"property": "status", "from": "review", '
                                 '"to": "approved"}; the form is in the documentation (guides/conditions)')


def items_of(events: list[str | SubscriptionIn]) -> list[SubscriptionItem]:
    """The subscriptions as the store keeps them: texts, and objects for those with conditions."""
    return [event if isinstance(event, str) else event.model_dump() for event in events]


class IntegrationFields(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    environment: str | None = Field(default=None, min_length=1, max_length=64)
    ordering: Literal["entity", "none"] | None = None
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    rate_limit: float | None = Field(default=None, ge=MIN_RATE_LIMIT, le=100_000,
                                     description="requests per second at most (at least one per 10 s)")
    concurrency: int | None = Field(default=None, ge=1, le=256, description="requests in flight at most; "
                                    "default: the publisher's concurrency_per_integration")
    headers: dict[str, str] | None = Field(default=None, max_length=20)
    send_traceparent: bool | None = Field(default=None, description="add the W3C traceparent header of the "
                                          "attempt's span to each request, so the receiver's spans join the "
                                          "change's trace (when the deployment has [tracing] on); default false")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, header_value in (value or {}).items():
            if (problem := custom_header_problem(name, header_value)) is not None:
                raise ValueError(problem)
        return value

    # Declared here, applied to the url and events of the create and patch bodies below.
    @field_validator("events", check_fields=False)
    @classmethod
    def _events(cls, value: list[str | SubscriptionIn] | None) -> list[str | SubscriptionIn] | None:
        for text in value or []:
            if isinstance(text, str) and len(text) > MAX_SUBSCRIPTION_LENGTH:
                raise ValueError(f"subscription {text[:40]!r}...: longer than {MAX_SUBSCRIPTION_LENGTH} characters")
        try:
            parse_items(items_of(value or []))
        except SubscriptionError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return value


class IntegrationIn(IntegrationFields):
    url: str = Field(min_length=8, max_length=2000)
    events: list[str | SubscriptionIn] = Field(
        min_length=1, max_length=100, description='ENTITY_KEY:OPS, e.g. flows/comments:*, or {"subscription": '
        '"ENTITY_KEY:OPS", "when": {condition}} to receive only the events the condition holds for')


class IntegrationPatch(IntegrationFields):
    """Only the fields sent change; ``null`` resets environment, rate_limit and headers."""

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    events: list[str | SubscriptionIn] | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _required_stay_set(self) -> IntegrationPatch:
        for name in ("url", "events", "name", "ordering", "batch_size"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class IntegrationOut(BaseModel):
    id: int
    name: str
    url: str
    events: list[str | dict[str, Any]]
    enabled: bool
    disabled_reason: str | None
    environment: str | None
    ordering: str
    batch_size: int
    rate_limit: float | None
    concurrency: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    send_traceparent: bool = Field(default=False, description="requests carry the attempt's W3C traceparent")
    catching_up: bool = Field(default=False, description="a replay since it was disabled is running; live "
                              "changes wait behind it")

    @classmethod
    def of(cls, description: dict[str, Any]) -> IntegrationOut:
        return cls(**{k: v for k, v in description.items() if k in cls.model_fields})


class IntegrationCreated(IntegrationOut):
    secrets: list[str] = Field(description="the secrets its webhooks are signed with; shown at creation, "
                                           "then only through reveal or rotate")


class SecretOut(BaseModel):
    secrets: list[str] = Field(description="active signing secrets, newest first")


class RotateIn(_In):
    overlap_hours: float = Field(default=24.0, ge=0, le=24 * 7)


SampleValue = str | int | float | bool | None


class SampleIn(_In):
    entity_key: str = Field(min_length=1, max_length=200)
    operation: Literal["created", "updated", "deleted", "read"] = "created"
    new: dict[str, SampleValue] | None = Field(default=None, max_length=50, description="properties of the "
                                               "example's new row, e.g. {\"status\": \"approved\"}")
    old: dict[str, SampleValue] | None = Field(default=None, max_length=50, description="properties of the "
                                               "example's old row, e.g. {\"status\": \"review\"}")

    @field_validator("new", "old")
    @classmethod
    def _names(cls, value: dict[str, SampleValue] | None) -> dict[str, SampleValue] | None:
        for name, item in (value or {}).items():
            if not name or len(name) > 200 or (isinstance(item, str) and len(item) > 10_000):
                raise ValueError(f"property {name[:40]!r}: the name is 1-200 characters, a text value at most 10,000")
        return value


class SampleOut(BaseModel):
    webhook_id: str
    status: int | None
    headers: dict[str, str]
    body: str
    duration_ms: float
    error: str | None
    payload: dict[str, Any]
    subscribed: bool = Field(default=False, description="whether the integration would have received such an "
                             "event (its subscriptions and their conditions)")


class DeliveryOut(BaseModel):
    id: int
    integration_id: int
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


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None = Field(description="pass as cursor for the next (older) page")


class AttemptOut(BaseModel):
    id: int
    number: int
    trigger: str
    started_at: datetime
    url: str
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    duration_ms: float
    error: str | None


class DeliveryDetail(DeliveryOut):
    body: str
    attempts_log: list[AttemptOut]


class RecoverIn(_In):
    since: datetime


class ReplayIn(_In):
    offset: int | None = Field(default=None, ge=0, le=2**63 - 1)
    since: datetime | None = None


class ScheduledOut(BaseModel):
    id: int
    event_id: str
    webhook_id: str


class Scheduled(BaseModel):
    scheduled: list[ScheduledOut]


class ReplayJobOut(BaseModel):
    """A replay job: ``state`` running, done, failed or cancelled; counts of records scanned and scheduled."""

    id: int
    integration_id: int
    state: str
    reason: str = Field(description="requested, or enabled (catching up from when it was disabled)")
    start_offset: int | None
    since: datetime | None
    scanned: int
    scheduled: int
    error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class EnabledOut(IntegrationOut):
    replay_job: ReplayJobOut | None = Field(default=None, description="the job catching it up, if any")


class PortalLinkIn(_In):
    capabilities: list[Literal["view", "manage_integrations", "secrets", "recover"]] = Field(
        default=["view"], max_length=4, description="view is always included")
    expiry_hours: float = Field(default=1.0, gt=0, le=24, description="how long the link can be opened")
    session_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   description="revoke every link and session of it with one call")


class PortalLinkOut(BaseModel):
    url: str = Field(description="single-use; opening it signs the browser in and spends it")
    expires_at: datetime
    capabilities: list[str]
    session_id: str | None


class PortalRevokeIn(_In):
    session_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")


class PortalRevoked(BaseModel):
    links: int = Field(description="unused links revoked")
    sessions: int = Field(description="open portal sessions ended")


class BackfillIn(_In):
    """Start a backfill of one captured table, named by its entity key, for one integration or for all."""

    entity_key: str = Field(min_length=1, max_length=200, description="the table's [[entities]] entity_key")
    integration_id: int | None = Field(default=None, ge=1, le=2**63 - 1, description="only this integration "
                                       "receives the rows; none: every integration subscribed to KEY:read")
    filter: str | None = Field(default=None, min_length=1, max_length=2000,
                               description="conditions over the table's columns joined by AND, e.g. "
                                           "\"status = 'open' AND id > 100\"")


class BackfillOut(BaseModel):
    """A backfill: ``state`` running, paused, cancelled, failed or done; rows estimated, read, published."""

    id: int
    table_name: str
    integration_id: int | None
    filter: str | None
    state: str
    rows_estimated: int | None
    rows_read: int
    rows_published: int
    rows_superseded: int = Field(description="read, then left out because the stream changed the row meanwhile "
                                             "(the stream's event carries its state)")
    percent: float | None = Field(description="rows read of the estimate")
    cursor: list[str] | None = Field(description="the key of the last row Kafka acknowledged")
    chunks: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class UsageOut(BaseModel):
    """An organization's manual actions (redeliver, recover, replay) and the log it wrote, against its limits."""

    actions_last_minute: int
    actions_per_minute: int = Field(description="[api] manual_actions_per_minute; past it 429")
    log_mb_24h: float = Field(description="delivery log (bodies, attempts) written in the last 24 hours")
    log_mb_quota: int = Field(description="[api] log_mb_per_organization; past it manual actions get 429")

    @classmethod
    def of(cls, used: Usage, api: ApiSettings) -> UsageOut:
        return cls(actions_last_minute=used.actions_last_minute, actions_per_minute=api.manual_actions_per_minute,
                   log_mb_24h=round(used.log_bytes_24h / 2**20, 1), log_mb_quota=api.log_mb_per_organization)
