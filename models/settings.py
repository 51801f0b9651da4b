"""Configuration sections, shared by the capture and delivery halves.

``Settings`` is the whole configuration; loading it (TOML file, environment overrides, error messages)
lives with the CLI, which passes each half the sections it needs. These classes only say what each
section holds and what its defaults are.
"""

from __future__ import annotations

import ipaddress
import re
import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from models.errors import ConfigError

# A column name as the catalog has it: mixed case, non-ASCII letters and inner spaces are fine.
_IDENTIFIER = re.compile(r"^[^\W\d](?:[\w$ ]*[\w$])?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Section):
    """``[source]``: the database whose changes are captured."""

    dsn: str = Field(description="database to capture (URL or key=value form)")
    slot: str = Field(default="walhook", description="logical replication slot; created if missing")
    publication: str = Field(default="walhook", description="publication for exactly the configured tables; "
                             "created if missing, extended when you add a table")
    default_organization: str | None = Field(default=None, min_length=1, max_length=200, description="the "
                                             "organization of tables with neither organization_column nor "
                                             "organization; unset: their events reach no integration")
    set_replica_identity_full: bool = Field(
        default=True, description="set REPLICA IDENTITY FULL on captured tables whose identity is DEFAULT (their "
        "primary key), for oldValue and updateMask; USING INDEX and NOTHING are left as the owner set them; "
        "[[entities]] replica_identity_full overrides it per table")
    status_interval: float = Field(default=1.0, gt=0, description="seconds between standby status updates "
                                   "(the confirmed LSN)")
    heartbeat_interval: float = Field(default=10.0, ge=0, description="seconds between heartbeats "
                                      "(pg_logical_emit_message, non-transactional) that let an idle slot advance; "
                                      "0 turns them off")
    max_slot_lag_bytes: int | None = Field(default=None, ge=0, description="log an error each heartbeat while the "
                                           "slot keeps more WAL than this (counted to the WAL's insert position, so "
                                           "WAL still in the server's buffers counts)")
    truncate: Literal["skip", "event"] = Field(default="skip", description="skip: TRUNCATE is skipped with a "
                                               "warning; event: one truncated event per captured table")
    environment: str | None = Field(default=None, description="e.g. production; integrations of another "
                                    "environment do not receive this source's events")
    slot_busy_timeout: float = Field(default=30.0, ge=0, description="seconds to wait for a slot another process "
                                     "holds (after a crash the old walsender may hold it briefly) before exiting "
                                     "with the error")
    metrics_address: str | None = Field(default=None, description="host:port for the capture process's "
                                        "Prometheus /metrics, /healthz and /readyz; off by default")
    row_path: Literal["auto", "compiled", "python"] = Field(
        default="auto", description="how row changes become events: compiled (the C extension built at install), "
        "python (the pure-Python reference) or auto (compiled when it was built); both write the same bytes")
    failover: bool = Field(default=True, description="create the slot as a failover slot (or switch it to one) on "
                           "Postgres 17+, so standbys with sync_replication_slots keep a copy; on 16 and older walhook "
                           "says once that failover is not available")
    standby_dsns: list[str] = Field(default_factory=list, description="standbys whose copy of the slot the "
                                    "readiness check reads, besides the other hosts of a multi-host dsn")

    @field_validator("slot", "publication")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
            raise ValueError("use 1-63 lowercase letters, digits or underscores")
        return value


class KafkaSettings(_Section):
    """``[kafka]``: where events go, and how they are produced and consumed."""

    bootstrap_servers: str = Field(description="Kafka bootstrap servers")
    topic: str = Field(default="walhook.events", description="events topic; created with `partitions` partitions "
                       "if missing")
    partitions: int = Field(default=6, ge=1, description="partition count when walhook creates the topic: "
                            "whichever process reaches Kafka first (capture or publisher) creates it so, before "
                            "anything else can make the broker create it with its default; an existing topic with "
                            "another count is kept, named in a warning at start and by walhook status")
    acks: Literal["all", "1", "0"] = Field(default="all", description="producer acks")
    # 20 ms: a batch per partition at most every 20 ms. Fewer, larger batches cost any broker less, and the
    # bundled one a lot (its fetches list every batch of a partition; docs/benchmarks.md section 2).
    linger_ms: int = Field(default=20, ge=0, description="how long a record batch waits for company: a commit "
                           "waits at most this long. 20 rather than 5 since 2026-12-07: on the bundled broker it cut "
                           "the broker's CPU per event by more than half and p99 at 1,000/s several-fold; on Apache "
                           "Kafka a smaller value saves up to 15 ms")
    max_batch_size: int = Field(default=1_048_576, ge=1024, description="largest record batch the producer "
                                "builds, in bytes")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(default="none",
                                                                          description="producer compression")
    enable_idempotence: bool = Field(default=False, description="idempotent producer; correctness never relies on "
                                     "it (the local tansu broker lacks it)")
    max_request_size: int = Field(default=8 * 1_048_576, ge=1024,
                                  description="largest event the producer sends. An update under REPLICA IDENTITY "
                                              "FULL carries the row twice, so the default carries updates of rows "
                                              "up to about 4 MB and inserts and deletes up to about 8 MB. Topics "
                                              "walhook creates get max.message.bytes = this (or max_batch_size, if "
                                              "larger); for a topic that already exists, walhook warns at start "
                                              "when its max.message.bytes is lower. Larger events go to the "
                                              "capture dead-letter topic")
    dead_letter_topic: str | None = Field(default=None, min_length=1, max_length=249,
                                          description="where the capture records changes it cannot send, with the "
                                                      "reason: events over max_request_size or refused by the "
                                                      "broker for good, and rows that cannot be converted (e.g. "
                                                      "text that is not UTF-8 in a SQL_ASCII database; the record "
                                                      "names the table and column); must differ from topic; "
                                                      "default: the topic + '.capture-dead-letter'")
    on_refused_event: Literal["dead-letter", "stop"] = Field(
        default="dead-letter", description="a change Kafka refuses for good or that cannot be converted: record "
                                           "it on the dead-letter topic and go on, or stop the stream naming it "
                                           "(the change stays in the slot until you raise the limit or fix the row)")
    consumer_group: str = Field(default="walhook-publisher", description="the publishers' consumer group")
    fetch_max_wait_ms: int = Field(default=10, ge=0, description="how long a fetch may wait for new records "
                                   "(latency versus idle polling)")

    @model_validator(mode="after")
    def _dead_letters_elsewhere(self) -> KafkaSettings:
        if self.dead_letter_topic == self.topic:  # the publisher would read the dead letters as events
            raise ValueError(f"dead_letter_topic must differ from topic ({self.topic!r})")
        return self

    @property
    def capture_dead_letter_topic_name(self) -> str:
        """The capture's dead-letter topic: the configured one, or the events topic + '.capture-dead-letter'."""
        return self.dead_letter_topic or f"{self.topic}.capture-dead-letter"

    @property
    def capture_dead_letter_topic(self) -> str | None:
        """Where the capture records refused changes; None when ``on_refused_event = "stop"``."""
        return None if self.on_refused_event == "stop" else self.capture_dead_letter_topic_name

    @property
    def max_message_bytes(self) -> int:
        """The ``max.message.bytes`` of topics walhook creates: the largest batch the producer sends."""
        return max(self.max_request_size, self.max_batch_size)


class StoreSettings(_Section):
    """``[store]``: walhook's own tables (organizations, secrets, integrations)."""

    dsn: str = Field(description="database holding walhook's tables (it may be the source database); the "
                     "publisher, the API and the CLI need it, and with it walhook cdc also runs backfills")
    schema_name: str = Field(default="walhook", alias="schema", description="schema for walhook's tables; an "
                             "identifier (letters, digits, _)")
    # NoDecode: the environment's value reaches the validator as written, a JSON list or comma-separated.
    secret_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="keys that encrypt signing secrets, each ID:BASE64 of 32 bytes; the first "
        "encrypts, all decrypt (walhook secrets new-key --id k2 prints one); WALHOOK_STORE__SECRET_KEYS takes a "
        "JSON list or k2:...,k1:...")
    plaintext_secrets: bool = Field(default=False, description="store signing secrets in plain text when no "
                                    "secret_keys are set (demo and tests); otherwise walhook refuses to start")

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _key_list(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            import json
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]

    @field_validator("secret_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        from models.secretbox import Keyring

        if value:
            Keyring(value)  # the message names the key id, never the key
        return value

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # Interpolated into SQL (as a quoted identifier): a plain identifier leaves nothing to escape.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
            raise ValueError("use an identifier: a letter or underscore, then letters, digits or underscores "
                             "(at most 63)")
        return value


class PublisherSettings(_Section):
    """``[publisher]``: webhook delivery."""

    request_timeout: float = Field(default=15.0, gt=0, description="seconds per attempt")
    max_connections: int = Field(default=1024, ge=1, description="connections to receivers a process keeps open "
                                 "at most (lowered to fit the open-files limit, less 256); when full, a new one "
                                 "replaces an idle one or waits, and a freed place goes to the waiting organization "
                                 "holding the fewest")
    max_connections_per_organization: int = Field(default=256, ge=1, description="connections to receivers one "
                                                  "organization may hold open; past it its requests wait (within their "
                                                  "timeout)")
    retry_delays: list[float] = Field(default=[0, 5, 300, 1800, 7200, 18000, 36000, 36000],
                                      description="wait before each attempt, seconds; its length is the attempt count")
    retry_jitter: float = Field(default=0.2, ge=0, lt=1, description="+/- fraction applied to each wait")
    concurrency_per_integration: int = Field(default=8, ge=1, le=256, description="requests in flight per "
                                             "integration")
    lane_capacity: int = Field(default=1000, ge=1, description="deliveries an integration holds in memory; the "
                               "rest wait in the store")
    claim_seconds: float = Field(default=60.0, gt=0, description="how long a publisher owns a delivery it took; "
                                 "after a crash, others retry it once this passes")
    poll_interval: float = Field(default=0.5, gt=0, description="seconds between looks for due retries")
    disable_after_days: float = Field(default=5.0, gt=0, description="continuous failure that disables an integration")
    integrations_cache_seconds: float = Field(default=2.0, ge=0, description="how soon an integration change "
                                              "takes effect: each publisher reloads what changed this often (and "
                                              "everything once a minute)")
    allowed_networks: list[str] = Field(default_factory=list, description="private networks webhooks may reach "
                                        "(the SSRF guard refuses them otherwise); list single receivers, not whole "
                                        "ranges")
    metrics_address: str | None = Field(default=None, description="host:port for the publisher process's "
                                        "Prometheus /metrics, /healthz and /readyz; off by default")
    dead_letter_topic: str | None = Field(
        default=None, min_length=1, max_length=249,
        description="where records of the events topic that are not walhook events go (original key, value and "
                    "headers, plus walhook-dead-letter-* headers naming the reason, topic, partition and offset); "
                    "default: the [kafka] topic + '.dead-letter'")

    def dead_letter_topic_for(self, kafka: KafkaSettings) -> str:
        """The publisher's dead-letter topic: the configured one, or the events topic + '.dead-letter'."""
        return self.dead_letter_topic or f"{kafka.topic}.dead-letter"

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Checked here, at load, so that a typo is one line naming the key, not a crash at the first request.
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip())
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.20.0.0/16): {exc}") from None
        return value

    @field_validator("retry_delays")
    @classmethod
    def _some_attempts(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("give at least one attempt and no negative waits")
        return value


class BackfillSettings(_Section):
    """``[backfill]``: how the capture process reads existing rows (see docs/guides/backfill.md)."""

    chunk_rows: int = Field(default=1000, ge=1, description="rows of the first chunk; later ones adapt")
    max_chunk_rows: int = Field(default=5000, ge=1, le=50_000, description="largest chunk: bounds memory and how "
                                "long emitting one chunk holds the stream")
    max_chunk_bytes: int = Field(default=16 << 20, ge=1 << 16, description="a chunk larger than this halves the "
                                 "next one")
    statement_timeout: float = Field(default=10.0, gt=0, description="seconds a chunk's query may take; past it "
                                     "the chunk is read again at half the size")
    target_chunk_seconds: float = Field(default=0.5, gt=0, description="chunks grow while their query takes less "
                                        "than a quarter of this and shrink when it takes more")
    poll_interval: float = Field(default=1.0, gt=0, description="seconds between looks for a backfill to run")
    max_rows_per_second: float = Field(default=0, ge=0, description="pace a backfill to at most this many rows "
                                       "per second, to leave the stream more of the machine; 0: no limit")


class RetentionSettings(_Section):
    """``[retention]``: how long the delivery log keeps settled deliveries and attempts.

    The publisher prunes it: attempt partitions (one per day and outcome) are dropped whole,
    settled deliveries older than their retention are deleted in small batches.
    """

    days: float = Field(default=7.0, gt=0, description="days a succeeded delivery and its attempts are kept")
    failed_days: float = Field(default=30.0, gt=0, description="days a failed delivery and every failed "
                               "attempt are kept (at least days)")
    interval: float = Field(default=600.0, gt=0, description="seconds between pruning rounds (each publisher)")
    batch: int = Field(default=5000, ge=1, description="deliveries deleted per statement while pruning")

    @model_validator(mode="after")
    def _failures_at_least_as_long(self) -> RetentionSettings:
        if self.failed_days < self.days:  # a failed delivery is what an operator still needs to look at
            raise ValueError(f"failed_days ({self.failed_days:g}) must be at least days ({self.days:g})")
        return self


class OperationalSettings(_Section):
    """``[operational]``: operational events (webhooks about the webhooks, ``walhook/operational``).

    Every organization's integrations may subscribe to their own; the operator's endpoint, when set,
    receives every organization's, signed with ``operator_secret``.
    """

    operator_url: str | None = Field(default=None, description="the operator's endpoint: receives every "
                                     "organization's operational events (unset: none)")
    operator_secret: str | None = Field(default=None, description="the signing secret (whsec_...) of the "
                                        "operator's endpoint; required with operator_url")
    relay_seconds: float = Field(default=1.0, gt=0, le=60, description="seconds between a publisher's looks "
                                 "for announced operational events to relay to Kafka")

    @model_validator(mode="after")
    def _secret_with_url(self) -> OperationalSettings:
        if self.operator_url and not self.operator_secret:
            raise ValueError("operator_url needs operator_secret (whsec_ and the base64 of 24 to 64 random bytes)")
        return self


class TracingSettings(_Section):
    """``[tracing]``: OpenTelemetry traces of each change, from capture to each attempt (docs/guides/tracing.md).

    Off by default, and then free: no span is made and no header written. On, capture and publisher
    export their spans over OTLP/HTTP and link them with a W3C ``traceparent`` Kafka header.
    """

    enabled: bool = Field(default=False, description="trace each change (needs the tracing extra: "
                          "pip install 'walhook[tracing]')")
    endpoint: str = Field(default="http://localhost:4318/v1/traces", min_length=1, description="the OTLP/HTTP "
                          "traces endpoint spans are exported to (a collector, Jaeger, Tempo, ...)")
    service_name: str = Field(default="walhook", min_length=1, max_length=200, description="the service.name of "
                              "the spans; the process adds -cdc or -publisher")
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of changes traced, decided once at "
                                "capture (the publisher follows the capture's decision)")


# Tokens that were published as examples (a compose default once): never accepted as the real one.
EXAMPLE_ADMIN_TOKENS = frozenset({"change-me-to-a-long-random-admin-token"})


class ApiSettings(_Section):
    """``[api]``: the management API."""

    host: str = Field(default="127.0.0.1", description="address walhook api listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="port walhook api listens on")
    admin_token: str | None = Field(default=None, min_length=24, description="bearer token for organization "
                                    "management and the operator endpoints (the documentation's old example value "
                                    "is refused); unset: they answer 401")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="larger request bodies get 413")
    max_integrations_per_organization: int = Field(default=100, ge=1, description="integrations one "
                                                   "organization may have (a 409 past it; the CLI keeps the same cap)")
    max_condition_cost_per_organization: int = Field(default=2000, ge=1, description="tests routing one event "
                                                     "through all of an organization's subscriptions may run: one "
                                                     "per subscription plus its condition's (a bound on its cost); "
                                                     "a 409 naming it on create or update, through the API, the "
                                                     "portal and the CLI alike")
    operator_address: str | None = Field(default=None, description="host:port serving /metrics and /readyz "
                                         "(without a token, and nothing else); unset: they need the admin token")
    max_replay_jobs_per_organization: int = Field(default=5, ge=1, description="requested replay jobs one "
                                                  "organization may have running or queued; past them 409")
    manual_actions_per_minute: int = Field(default=30, ge=1, description="redeliver, recover and replay actions "
                                           "one organization may take in 60 s; past them 429")
    log_mb_per_organization: int = Field(default=1024, ge=1, description="delivery log (bodies, attempts) one "
                                         "organization's deliveries may have written in 24 h before its manual "
                                         "actions get 429")
    auth_failures_per_minute: int = Field(default=20, ge=1, description="failed authentications (API key, admin "
                                          "token, portal sign-in) one source address may make in 60 s; past "
                                          "them its requests get 429 until the oldest is a minute old")
    metrics_per_integration: bool = Field(default=False, description="label failure streaks with integration ids "
                                          "(default: totals only, nothing that names a tenant's integration)")

    @field_validator("admin_token")
    @classmethod
    def _not_an_example(cls, value: str | None) -> str | None:
        if value in EXAMPLE_ADMIN_TOKENS:
            raise ValueError("this is the documentation's example token, known to everyone; choose a random one "
                             "(e.g. openssl rand -hex 32)")
        return value

    @field_validator("operator_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_address(value)
        return value


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9465`` for IPv6) as its parts; ``ValueError`` when it is not one."""
    host, _, port = address.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: expected host:port, e.g. 127.0.0.1:9465")
    return host.strip("[]"), int(port)


class PortalSettings(_Section):
    """``[portal]``: the web portal served by ``walhook api`` under ``/portal``."""

    enabled: bool = Field(default=True, description="serve the portal under /portal")
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
                                   description="base URL portal links point at, e.g. https://hooks.example.com; "
                                   "default: the URL the API request came to")
    title: str = Field(default="Webhooks", min_length=1, max_length=80, description="branding: the portal's title")
    logo_url: str | None = Field(default=None, max_length=2000, pattern=r"^(https?://|/)[^\s\"'<>]*$",
                                 description="branding: a logo's URL")
    accent_color: str = Field(default="#2563eb", pattern=r"^#[0-9a-fA-F]{6}$", description="branding: the "
                              "accent colour")
    frame_ancestors: list[str] = Field(default_factory=list, description="origins allowed to embed the portal "
                                       "in an iframe ('self' or https://host); empty: no embedding")
    signing_key: str | None = Field(default=None, min_length=32, description="signs portal links; unset: a key "
                                    "derived from the store's current secret key, or (with plaintext_secrets) "
                                    "generated once and kept in the store")
    session_hours: float = Field(default=8.0, gt=0, le=24, description="how long a portal session lasts, in "
                                  "hours (at most 24)")

    @field_validator("frame_ancestors")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "'self'" and not re.fullmatch(r"https?://[A-Za-z0-9.*-]+(:\d{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com or 'self'")
        return value


class EntitySettings(_Section):
    """``[[entities]]``: one captured table and how its rows become entity events."""

    table: str = Field(description="schema.table (public. is assumed when no schema is given)")
    entity_key: str = Field(description="e.g. flows/comments; what integrations subscribe to")
    entity_path: str = Field(description="template over column names, e.g. "
                             "pipelinesPackets/{packet_id}/comments/{id}")
    collection_path: str = Field(description="template over column names, e.g. pipelinesPackets/{packet_id}/comments")
    entity_id: str | None = Field(default=None, description="template; default: the last column of entity_path")
    organization_column: str | None = Field(default=None, description="column holding the organization id; if "
                                            "it is unset or the row's value is NULL, organizationId is null and no "
                                            "integration receives the event (a warning is logged)")
    organization: str | None = Field(default=None, min_length=1, max_length=200, description="the organization "
                                     "every row belongs to, for a table without an organization column; default: "
                                     "[source] default_organization")
    create_time_column: str | None = Field(default=None, description="column for createTime")
    update_time_column: str | None = Field(default=None, description="column for updateTime")
    exclude_columns: list[str] = Field(default_factory=list, description="columns that never leave the CDC process")
    property_names: Literal["as_is", "camel_case"] = Field(default="as_is", description="camel_case turns "
                                                           "soft_removed into softRemoved")
    replica_identity_full: bool | None = Field(
        default=None, description="true: set REPLICA IDENTITY FULL even over USING INDEX or NOTHING; false: never "
        "change it; default: [source] set_replica_identity_full for a table with the DEFAULT identity")

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if '"' in value:
            raise ValueError("write the names without quotes, exactly as the catalog has them (case matters), "
                             "e.g. 'Sales.Order Items'")
        schema, _, name = value.rpartition(".")
        if not name or (schema and not schema.strip()):
            raise ValueError("give the table as 'schema.table' or 'table'")
        return value if schema else f"public.{value}"

    @field_validator("entity_path", "collection_path", "entity_id")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_columns(value)
        return value

    @model_validator(mode="after")
    def _one_organization(self) -> EntitySettings:
        if self.organization is not None and self.organization_column is not None:
            raise ValueError(f"[[entities]] {self.table}: give organization_column (each row's own) or organization "
                             "(one for every row), not both")
        return self

    def reaches_an_organization(self) -> bool:
        """Whether its events belong to an organization (so that integrations can receive them)."""
        return self.organization_column is not None or self.organization is not None

    def columns_used(self) -> set[str]:
        """Every column the mapping reads, for checking against the table."""
        names = {self.organization_column, self.create_time_column, self.update_time_column}
        for template in (self.entity_path, self.collection_path, self.entity_id or ""):
            names.update(template_columns(template))
        return {name for name in names if name}


def template_columns(template: str) -> list[str]:
    """The column names a path template uses: ``'a/{x}/b/{y}'`` -> ``['x', 'y']``."""
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc
    for name in fields:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"bad template {template!r}: {{{name}}} is not a column name")
    return fields


class Settings(BaseSettings):
    """The whole configuration. Sections left out of the file are absent (``None``)."""

    model_config = SettingsConfigDict(env_prefix="WALHOOK_", env_nested_delimiter="__", extra="forbid")

    source: SourceSettings | None = None
    kafka: KafkaSettings | None = None
    store: StoreSettings | None = None
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    operational: OperationalSettings = Field(default_factory=OperationalSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    entities: list[EntitySettings] = Field(default_factory=list)
    _origin: str = PrivateAttr(default="configuration")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file's values, which arrive as init arguments.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _default_organization(self) -> Settings:
        """Give ``[source] default_organization`` to every entity with neither organization setting: the
        entity is then the one place capture and backfills read a row's organization from."""
        default = self.source.default_organization if self.source else None
        if default is not None:
            self.entities = [entity if entity.reaches_an_organization() else
                             entity.model_copy(update={"organization": default}) for entity in self.entities]
        return self

    def require(self, *sections: str) -> None:
        """Fail with a clear message when a command needs a section the file lacks."""
        missing = [name for name in sections if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"{self._origin}: missing section(s): " + ", ".join(f"[{name}]" for name in missing))
