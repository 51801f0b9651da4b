"""The names of the Kafka record headers walhook writes: the one place capture, delivery and the tools agree on.

Capture writes the routing headers on every event so a publisher can route a record without parsing
its body; a backfill adds its own; the publisher's dead-letter records carry where they came from.
"""

from __future__ import annotations

EVENT_ID = "walhook-event-id"
ORGANIZATION_ID = "walhook-organization-id"
ENTITY_KEY = "walhook-entity-key"
OPERATION_TYPE = "walhook-operation-type"
ENTITY_PATH = "walhook-entity-path"
ENVIRONMENT = "walhook-environment"  # only on events of an entity configured with an environment
BACKFILL_ID = "walhook-backfill-id"
BACKFILL_INTEGRATION = "walhook-backfill-integration"  # a backfill for one integration: only it receives the reads
DEAD_LETTER_PREFIX = "walhook-dead-letter-"  # + reason, topic, partition, offset, truncated-from
TRACEPARENT = "traceparent"  # W3C trace context: only with [tracing] enabled (models.tracing)

# Header -> field of the publisher's routing view of an event; all of them present means no body parse.
ROUTING_HEADERS = {EVENT_ID: "event_id", ORGANIZATION_ID: "organization_id", ENTITY_KEY: "entity_key",
           OPERATION_TYPE: "operation", ENTITY_PATH: "entity_path"}
