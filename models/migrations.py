"""Versioned migrations of walhook's own schema.

Each migration is a version number and its SQL (``{schema}`` stands for the configured
schema). ``migrate`` applies the missing ones in order, each in its own transaction, under
an advisory lock so several publishers starting at once do not race. A migration once
released is never edited; changes come as new versions.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("walhook.store")

_LOCK_KEY = 0x77616C686F6F6B  # "walhook"

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE {schema}.organizations (
    id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}.integrations (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    name text NOT NULL,
    url text NOT NULL,
    environment text,
    events jsonb NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    failing_since timestamptz,
    ordering text NOT NULL DEFAULT 'entity' CHECK (ordering IN ('entity', 'none')),
    batch_size integer NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 1000),
    rate_limit double precision CHECK (rate_limit > 0),
    headers jsonb NOT NULL DEFAULT '{{}}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integrations_organization ON {schema}.integrations (organization_id);
CREATE TABLE {schema}.signing_secrets (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    integration_id bigint REFERENCES {schema}.integrations ON DELETE CASCADE,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX signing_secrets_owner ON {schema}.signing_secrets (organization_id, integration_id);
CREATE TABLE {schema}.deliveries (
    id bigserial PRIMARY KEY,
    integration_id bigint NOT NULL REFERENCES {schema}.integrations ON DELETE CASCADE,
    organization_id text NOT NULL,
    event_id text NOT NULL,
    webhook_id text NOT NULL,
    entity_key text NOT NULL,
    entity_path text NOT NULL,
    operation text NOT NULL,
    body bytea NOT NULL,
    source_partition integer,
    source_offset bigint,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration_id, event_id)
);
CREATE INDEX deliveries_due ON {schema}.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_entity_pending ON {schema}.deliveries (integration_id, entity_path, id)
    WHERE status = 'pending';
CREATE INDEX deliveries_integration ON {schema}.deliveries (integration_id, id DESC);
CREATE TABLE {schema}.attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES {schema}.deliveries ON DELETE CASCADE,
    integration_id bigint NOT NULL,
    number integer NOT NULL,
    trigger text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'replay')),
    started_at timestamptz NOT NULL,
    url text NOT NULL,
    request_headers jsonb NOT NULL,
    response_status integer,
    response_headers jsonb,
    response_body bytea,
    duration_ms double precision NOT NULL,
    error text
);
CREATE INDEX attempts_integration ON {schema}.attempts (integration_id, id DESC);
CREATE INDEX attempts_delivery ON {schema}.attempts (delivery_id, id);
"""),
    (2, """
ALTER TABLE {schema}.deliveries ADD COLUMN trigger text NOT NULL DEFAULT 'scheduled'
    CHECK (trigger IN ('scheduled', 'manual', 'replay'));
CREATE INDEX deliveries_failed ON {schema}.deliveries (integration_id, updated_at) WHERE status = 'failed';
"""),
    (3, """
CREATE TABLE {schema}.api_keys (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL UNIQUE,
    key_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_organization ON {schema}.api_keys (organization_id);
"""),
    (4, """
ALTER TABLE {schema}.integrations ADD COLUMN concurrency integer CHECK (concurrency BETWEEN 1 AND 256);
ALTER TABLE {schema}.integrations ADD COLUMN disabled_at timestamptz;
UPDATE {schema}.integrations SET disabled_at = updated_at WHERE NOT enabled;
CREATE INDEX integrations_updated ON {schema}.integrations (updated_at);
CREATE TABLE {schema}.replay_jobs (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    integration_id bigint NOT NULL REFERENCES {schema}.integrations ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed', 'cancelled')),
    reason text NOT NULL CHECK (reason IN ('requested', 'enabled')),
    start_offset bigint,
    since timestamptz,
    end_positions jsonb,
    progress jsonb NOT NULL DEFAULT '{{}}',
    scanned bigint NOT NULL DEFAULT 0,
    scheduled bigint NOT NULL DEFAULT 0,
    error text,
    cancel_requested boolean NOT NULL DEFAULT false,
    claimed_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX replay_jobs_running ON {schema}.replay_jobs (id) WHERE state = 'running';
CREATE INDEX replay_jobs_integration ON {schema}.replay_jobs (integration_id, id DESC);
ALTER TABLE {schema}.integrations ADD COLUMN catching_up_job bigint
    REFERENCES {schema}.replay_jobs ON DELETE SET NULL;
CREATE INDEX deliveries_integration_due ON {schema}.deliveries (integration_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX deliveries_entity_position ON {schema}.deliveries (integration_id, entity_path, source_offset, id)
    WHERE status = 'pending';
"""),
    (5, """
ALTER TABLE {schema}.integrations ADD COLUMN disabled_positions jsonb;
"""),
    # The portal: single-use links (their id is the signed token's jti) and the sessions they open.
    (30, """
CREATE TABLE {schema}.portal_links (
    id text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    capabilities text[] NOT NULL,
    session_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX portal_links_session ON {schema}.portal_links (organization_id, session_id);
CREATE TABLE {schema}.portal_sessions (
    id bigserial PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    organization_id text REFERENCES {schema}.organizations ON DELETE CASCADE,
    capabilities text[] NOT NULL,
    session_id text,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX portal_sessions_session ON {schema}.portal_sessions (organization_id, session_id);
-- The portal's 24-hour statistics and chart read deliveries by time.
CREATE INDEX deliveries_organization_created ON {schema}.deliveries (organization_id, created_at);
CREATE INDEX deliveries_integration_created ON {schema}.deliveries (integration_id, created_at);
"""),
    # The key portal links are signed with when [portal] signing_key is not set: made once, shared by
    # every API process that uses this store.
    (31, """
CREATE TABLE {schema}.portal_signing_keys (
    id integer PRIMARY KEY CHECK (id = 1),
    key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""),
    (20, """
CREATE TABLE {schema}.cdc_positions (
    database text NOT NULL,
    slot text NOT NULL,
    system_identifier text NOT NULL,
    timeline integer NOT NULL,
    confirmed_lsn pg_lsn NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (database, slot)
);
"""),
    (21, """
ALTER TABLE {schema}.signing_secrets ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE {schema}.signing_secrets ADD COLUMN key_id text, ADD COLUMN nonce bytea, ADD COLUMN ciphertext bytea;
ALTER TABLE {schema}.signing_secrets ADD CONSTRAINT signing_secrets_plain_or_sealed CHECK (
    (secret IS NULL) = (ciphertext IS NOT NULL) AND (key_id IS NULL) = (ciphertext IS NULL)
    AND (nonce IS NULL) = (ciphertext IS NULL));
CREATE INDEX signing_secrets_key ON {schema}.signing_secrets (key_id);
"""),
    # Events an integration subscribed to by entity key and operation that its conditions filtered out
    # (no delivery row). No foreign key: counting must never fail a batch because an integration was
    # just deleted; ids are never reused, and readers join the integrations that exist.
    (50, """
CREATE TABLE {schema}.filtered_events (
    integration_id bigint PRIMARY KEY,
    events bigint NOT NULL DEFAULT 0,
    last_at timestamptz NOT NULL DEFAULT now()
);
"""),
    (70, """
CREATE TABLE {schema}.backfills (
    id bigserial PRIMARY KEY,
    table_name text NOT NULL,
    organization_id text REFERENCES {schema}.organizations ON DELETE CASCADE,
    integration_id bigint REFERENCES {schema}.integrations ON DELETE CASCADE,
    filter text,
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'paused', 'cancelled', 'failed', 'done')),
    key_columns jsonb,
    cursor jsonb,
    rows_estimated bigint,
    rows_read bigint NOT NULL DEFAULT 0,
    rows_published bigint NOT NULL DEFAULT 0,
    rows_superseded bigint NOT NULL DEFAULT 0,
    chunks bigint NOT NULL DEFAULT 0,
    chunk_rows integer,
    error text,
    claimed_by text,
    claimed_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX backfills_one_active ON {schema}.backfills
    (table_name, coalesce(organization_id, ''), coalesce(integration_id, 0)) WHERE state IN ('running', 'paused');
CREATE INDEX backfills_running ON {schema}.backfills (id) WHERE state = 'running';
"""),
    (60, """
-- The attempts log, whose rows are the largest of the delivery log (headers, response bodies), partitioned by
-- outcome and then by day, so that pruning drops whole partitions (publisher.store.retention).
ALTER SEQUENCE {schema}.attempts_id_seq OWNED BY NONE;
ALTER TABLE {schema}.attempts RENAME TO attempts_before_partitioning;
ALTER INDEX {schema}.attempts_pkey RENAME TO attempts_before_partitioning_pkey;
ALTER INDEX {schema}.attempts_integration RENAME TO attempts_before_partitioning_integration;
ALTER INDEX {schema}.attempts_delivery RENAME TO attempts_before_partitioning_delivery;
CREATE TABLE {schema}.attempts (
    id bigint NOT NULL DEFAULT nextval('{schema}.attempts_id_seq'),
    delivery_id bigint NOT NULL REFERENCES {schema}.deliveries ON DELETE CASCADE,
    integration_id bigint NOT NULL,
    number integer NOT NULL,
    trigger text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'replay')),
    started_at timestamptz NOT NULL,
    url text NOT NULL,
    request_headers jsonb NOT NULL,
    response_status integer,
    response_headers jsonb,
    response_body bytea,
    duration_ms double precision NOT NULL,
    error text,
    outcome text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    PRIMARY KEY (id, outcome, started_at)
) PARTITION BY LIST (outcome);
ALTER SEQUENCE {schema}.attempts_id_seq OWNED BY {schema}.attempts.id;
CREATE TABLE {schema}.attempts_succeeded PARTITION OF {schema}.attempts FOR VALUES IN ('succeeded')
    PARTITION BY RANGE (started_at);
CREATE TABLE {schema}.attempts_failed PARTITION OF {schema}.attempts FOR VALUES IN ('failed')
    PARTITION BY RANGE (started_at);
-- Rows of a day without its own partition (the publisher creates them days ahead) land here.
CREATE TABLE {schema}.attempts_succeeded_default PARTITION OF {schema}.attempts_succeeded DEFAULT;
CREATE TABLE {schema}.attempts_failed_default PARTITION OF {schema}.attempts_failed DEFAULT;
CREATE INDEX attempts_integration ON {schema}.attempts (integration_id, id DESC);
CREATE INDEX attempts_delivery ON {schema}.attempts (delivery_id, id);
CREATE INDEX attempts_started ON {schema}.attempts (started_at);
INSERT INTO {schema}.attempts (id, delivery_id, integration_id, number, trigger, started_at, url, request_headers,
    response_status, response_headers, response_body, duration_ms, error, outcome)
SELECT a.id, a.delivery_id, a.integration_id, a.number, a.trigger, a.started_at, a.url, a.request_headers,
    a.response_status, a.response_headers, a.response_body, a.duration_ms, a.error,
    CASE WHEN a.response_status BETWEEN 200 AND 299 THEN 'succeeded' ELSE 'failed' END
FROM {schema}.attempts_before_partitioning a;
DROP TABLE {schema}.attempts_before_partitioning;
-- Settled deliveries by age: what pruning deletes.
CREATE INDEX deliveries_settled ON {schema}.deliveries (status, updated_at) WHERE status <> 'pending';
"""),
    (80, """
-- When a replay job last gave its publisher up after a slice of work: jobs are claimed organization by
-- organization, the one served longest ago first (publisher.store.jobs).
ALTER TABLE {schema}.replay_jobs ADD COLUMN sliced_at timestamptz;
ALTER TABLE {schema}.backfills ADD COLUMN sliced_at timestamptz;
"""),
    (81, """
-- Each organization's manual actions (redeliver, recover, replay), kept an hour: their rate is limited.
CREATE TABLE {schema}.organization_actions (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES {schema}.organizations ON DELETE CASCADE,
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_actions_recent ON {schema}.organization_actions (organization_id, at);
"""),
    (82, """
-- Integration ids are drawn at random among 9-digit numbers instead of counted: an organization that sees
-- its own ids learns nothing of how many integrations the others have. The insert skips a taken id
-- (ON CONFLICT DO NOTHING) and draws again (publisher.store.integrations).
ALTER TABLE {schema}.integrations ALTER COLUMN id SET DEFAULT (100000000 + floor(random() * 900000000))::bigint;
"""),
    (83, """
-- Operational events (models.operational): announced by triggers in the same transaction as the change they
-- describe, whichever front end or process made it; a publisher relays them to Kafka and deletes them.
CREATE TABLE {schema}.operational_events (
    id bigserial PRIMARY KEY,
    organization_id text NOT NULL,
    kind text NOT NULL,
    subject text NOT NULL,
    details jsonb NOT NULL DEFAULT '{{}}',
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz
);
CREATE FUNCTION {schema}.announce(organization text, kind text, subject text, details jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO {schema}.operational_events (organization_id, kind, subject, details)
    VALUES (organization, kind, subject, jsonb_strip_nulls(details))
$$;
CREATE FUNCTION {schema}.announce_integration() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.announce(NEW.organization_id,
        CASE WHEN NEW.enabled THEN 'integration.recovered' ELSE 'integration.disabled' END,
        'integrations/' || NEW.id,
        jsonb_build_object('integration_id', NEW.id, 'url', NEW.url, 'reason', NEW.disabled_reason));
    RETURN NULL;
END $$;
CREATE TRIGGER announce_integration AFTER UPDATE OF enabled ON {schema}.integrations FOR EACH ROW
    WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled) EXECUTE FUNCTION {schema}.announce_integration();
-- A delivery that will not be tried again; an operational one announces nothing (no event about an event).
CREATE FUNCTION {schema}.announce_exhausted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.announce(NEW.organization_id, 'delivery.exhausted', 'deliveries/' || NEW.id,
        jsonb_build_object('delivery_id', NEW.id, 'integration_id', NEW.integration_id,
                           'webhook_id', NEW.webhook_id, 'entity_key', NEW.entity_key,
                           'entity_path', NEW.entity_path, 'attempts', NEW.attempts, 'error', NEW.last_error));
    RETURN NULL;
END $$;
CREATE TRIGGER announce_exhausted AFTER UPDATE OF status ON {schema}.deliveries FOR EACH ROW
    WHEN (OLD.status = 'pending' AND NEW.status = 'failed' AND NEW.entity_key <> 'walhook/operational')
    EXECUTE FUNCTION {schema}.announce_exhausted();
CREATE TRIGGER announce_exhausted_at_once AFTER INSERT ON {schema}.deliveries FOR EACH ROW
    WHEN (NEW.status = 'failed' AND NEW.entity_key <> 'walhook/operational')
    EXECUTE FUNCTION {schema}.announce_exhausted();
CREATE FUNCTION {schema}.announce_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    what text := CASE WHEN TG_TABLE_NAME = 'replay_jobs' THEN 'replay' ELSE 'backfill' END;
    subject text := CASE WHEN TG_TABLE_NAME = 'replay_jobs' THEN 'replay-jobs/' ELSE 'backfills/' END || NEW.id;
    fields jsonb := to_jsonb(NEW);
BEGIN
    PERFORM {schema}.announce(coalesce(NEW.organization_id, '_operator'),
        what || CASE WHEN NEW.state = 'failed' THEN '.failed' ELSE '.finished' END, subject,
        jsonb_build_object(what || '_id', NEW.id, 'integration_id', NEW.integration_id, 'state', NEW.state,
                           'error', NEW.error, 'reason', fields->'reason', 'table', fields->'table_name',
                           'scanned', fields->'scanned', 'scheduled', fields->'scheduled',
                           'rows_published', fields->'rows_published'));
    RETURN NULL;
END $$;
CREATE TRIGGER announce_replay_job AFTER UPDATE OF state ON {schema}.replay_jobs FOR EACH ROW
    WHEN (OLD.state = 'running' AND NEW.state <> 'running') EXECUTE FUNCTION {schema}.announce_job();
CREATE TRIGGER announce_backfill AFTER UPDATE OF state ON {schema}.backfills FOR EACH ROW
    WHEN (OLD.state IN ('running', 'paused') AND NEW.state IN ('done', 'failed', 'cancelled'))
    EXECUTE FUNCTION {schema}.announce_job();
-- A new secret beside an older one of the same owner is a rotation (never the secret itself).
CREATE FUNCTION {schema}.announce_rotation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous timestamptz;
BEGIN
    -- An integration's first own secret replaces the organization's for it: a rotation too.
    SELECT max(coalesce(expires_at, 'infinity')) INTO previous FROM {schema}.signing_secrets
        WHERE organization_id = NEW.organization_id AND id <> NEW.id
        AND (integration_id IS NOT DISTINCT FROM NEW.integration_id OR integration_id IS NULL);
    IF previous IS NOT NULL THEN
        PERFORM {schema}.announce(NEW.organization_id, 'secret.rotated',
            coalesce('integrations/' || NEW.integration_id, 'organizations/' || NEW.organization_id),
            jsonb_build_object('integration_id', NEW.integration_id, 'previous_expires_at',
                               CASE WHEN previous = 'infinity' THEN NULL ELSE previous END));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER announce_rotation AFTER INSERT ON {schema}.signing_secrets FOR EACH ROW
    EXECUTE FUNCTION {schema}.announce_rotation();
-- When an old secret stops signing is announced by the relay (a moment, not a change): past ones are not.
ALTER TABLE {schema}.signing_secrets ADD COLUMN overlap_announced boolean NOT NULL DEFAULT false;
UPDATE {schema}.signing_secrets SET overlap_announced = true WHERE expires_at <= now();
CREATE INDEX signing_secrets_overlap_unannounced ON {schema}.signing_secrets (expires_at) WHERE NOT overlap_announced;
"""),
    (84, """
-- An integration may opt in to a W3C traceparent header on its requests (with [tracing] on, publisher.tracing).
ALTER TABLE {schema}.integrations ADD COLUMN send_traceparent boolean NOT NULL DEFAULT false;
"""),
    (85, """
-- A live delivery's first attempt is kept in the delivery's own row (publisher.store.deliveries): a change
-- delivered at the first try adds one row to the log, not two. Later attempts, and the first attempt of a
-- delivery that waited in the store, go to the attempts log; attempt_log reads both as one.
ALTER TABLE {schema}.deliveries ADD COLUMN first_attempt_id bigint, ADD COLUMN first_started_at timestamptz,
    ADD COLUMN first_url text, ADD COLUMN first_request_headers jsonb, ADD COLUMN first_response_status integer,
    ADD COLUMN first_response_headers jsonb, ADD COLUMN first_response_body bytea,
    ADD COLUMN first_duration_ms double precision, ADD COLUMN first_error text,
    ADD COLUMN first_outcome text CHECK (first_outcome IN ('succeeded', 'failed'));
CREATE INDEX deliveries_first_started ON {schema}.deliveries (first_started_at) WHERE first_attempt_id IS NOT NULL;
CREATE VIEW {schema}.attempt_log AS
SELECT id, delivery_id, integration_id, number, trigger, started_at, url, request_headers, response_status,
    response_headers, response_body, duration_ms, error, outcome
FROM {schema}.attempts
UNION ALL
SELECT first_attempt_id, id, integration_id, 1, 'scheduled', first_started_at, first_url, first_request_headers,
    first_response_status, first_response_headers, first_response_body, first_duration_ms, first_error, first_outcome
FROM {schema}.deliveries WHERE first_attempt_id IS NOT NULL;
"""),
    (86, """
-- The claim's plan must not depend on the statistics (publisher.store.deliveries.CLAIM_DUE). With a backlog the
-- last ANALYZE did not see, every index over pending deliveries looks empty to the planner, and it checked each
-- candidate's entity order by scanning the index of all due deliveries: a claim ran for minutes. The index the
-- claim scans now leaves held deliveries out (never due on their own: publisher.sending.ordering.HELD), so the
-- order check, which must see them, cannot take it; nothing reads pending deliveries by time across integrations.
DROP INDEX {schema}.deliveries_due;
DROP INDEX {schema}.deliveries_integration_due;
CREATE INDEX deliveries_claimable ON {schema}.deliveries (integration_id, next_attempt_at, id)
    WHERE status = 'pending' AND next_attempt_at < timestamptz '9999-01-01 00:00:00+00';
"""),
    (87, """
-- Every index of deliveries is one more write for each delivery logged, the store's busiest statement. An
-- integration's deliveries by time were read only for the portal's 24-hour figures, which now count the
-- organization's range of deliveries_organization_created by integration (a delivery's organization is its
-- integration's); a listing of an integration's deliveries goes by deliveries_integration, newest first.
DROP INDEX {schema}.deliveries_integration_created;
"""),
]


async def migrate(engine: AsyncEngine, schema: str) -> int:
    """Bring ``schema`` to the newest version; returns the version it is at."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.execute(text(f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
                                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"))
        applied = set((await conn.execute(text(f'SELECT version FROM "{schema}".schema_migrations'))).scalars())
        for version, statements in sorted(MIGRATIONS):
            if version in applied:
                continue
            await conn.exec_driver_sql(statements.format(schema=f'"{schema}"'))
            await conn.execute(text(f'INSERT INTO "{schema}".schema_migrations (version) VALUES (:v)'), {"v": version})
            log.info("store schema %s migrated to version %d", schema, version)
    return max(version for version, _ in MIGRATIONS)
