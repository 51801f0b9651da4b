"""Reading the captured tables' columns from the source database, to check conditions against them.

The API and the CLI ask when a subscription with conditions is created or changed (never on the
delivery path). When ``[source]`` is not configured or cannot be read, each entity's shape holds
only what its configuration says (``publisher.routing.shapes``) and a warning is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from models.settings import EntitySettings
from publisher.routing.matching import Subscription, SubscriptionItem, check_conditions, check_known_keys, parse_items
from publisher.routing.shapes import Column, EntityShape, shape_of

log = logging.getLogger("walhook.publisher")

# Domains resolved to their base type; an enum's labels in order.
_COLUMNS = """
SELECT a.attname, coalesce(b.typname, t.typname), coalesce(b.typcategory, t.typcategory), a.attnotnull,
       coalesce((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
                 WHERE e.enumtypid = coalesce(b.oid, t.oid)), '{}')
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


async def checked_subscriptions(items: Sequence[SubscriptionItem], entities: Sequence[EntitySettings],
                                source_dsn: str | None) -> list[Subscription]:
    """Subscriptions as the API, the CLI and the portal take them, checked: of the form, naming known
    entity keys, with conditions that can hold on those entities' columns. ``SubscriptionError``
    (``ConditionError``) names what is wrong and where; the tables are read only when a condition is given."""
    subscriptions = parse_items(items)
    check_known_keys(items, entities)
    if any(subscription.condition is not None for subscription in subscriptions):
        check_conditions(subscriptions, await entity_shapes(entities, source_dsn))
    return subscriptions


async def entity_shapes(entities: Sequence[EntitySettings], source_dsn: str | None) -> list[EntityShape]:
    """Every configured entity's shape, with its table's columns when the source can be read."""
    if source_dsn is None or not entities:
        return [shape_of(entity) for entity in entities]
    try:
        async with await psycopg.AsyncConnection.connect(source_dsn, connect_timeout=3) as conn:
            return [shape_of(entity, await _columns(conn, entity)) for entity in entities]
    except psycopg.Error as exc:
        log.warning("cannot read the captured tables' columns, checking conditions against the configuration "
                    "only: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return [shape_of(entity) for entity in entities]


async def _columns(conn: psycopg.AsyncConnection, entity: EntitySettings) -> list[Column] | None:
    schema, _, table = entity.table.rpartition(".")
    cursor = await conn.execute(_COLUMNS, [schema, table])
    rows = await cursor.fetchall()
    # A table that does not exist (yet): the capture refuses it at start; here only the configuration is known.
    return [Column(name, type_name, category, not_null, tuple(labels))
            for name, type_name, category, not_null, labels in rows] or None
