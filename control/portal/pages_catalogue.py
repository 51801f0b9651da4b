"""The event catalogue: every entity key, its operations, its properties with their types, an example.

Property names and types come from the captured table's columns (read from the source
database's catalog when ``[source]`` is configured), named as events name them
(``property_names``) and without the excluded columns. The example is the same one
``POST .../sample`` sends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from control.portal.auth import Scope, scope
from control.portal.render import page
from models.events import camel_case
from models.samples import EVENT_OPERATIONS, example_event, listed_for, operational_entry
from models.settings import EntitySettings

router = APIRouter(prefix="/portal/o/{organization_id}", include_in_schema=False, dependencies=[Depends(scope)])

_JSON_TYPES = {"smallint": "number", "integer": "number", "bigint": "number", "oid": "number", "real": "number",
               "double precision": "number", "boolean": "boolean", "json": "JSON", "jsonb": "JSON",
               "numeric": "string (exact decimal)", "money": "string (exact decimal)", "bytea": "string (base64)",
               "timestamp with time zone": "string (ISO 8601, UTC)", "timestamp without time zone": "string (ISO 8601)"}


@dataclass(frozen=True)
class Property:
    name: str
    column_type: str
    json_type: str


def json_type(column_type: str) -> str:
    """How a column's values appear in an event (see the value rules in docs/concepts/events.md)."""
    if column_type.endswith("[]"):
        return f"array of {json_type(column_type[:-2])}"
    return _JSON_TYPES.get(column_type, "string")


async def columns(dsn: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of the table's live columns, in order; empty when the table cannot be read."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=3) as conn:
            cursor = await conn.execute(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [_quoted(table)])
            return [(str(name), str(kind)) for name, kind in await cursor.fetchall()]
    except psycopg.Error:
        return []


def _quoted(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))


def properties(entity: EntitySettings, table_columns: list[tuple[str, str]]) -> list[Property]:
    style = camel_case if entity.property_names == "camel_case" else str
    return [Property(style(name), kind, json_type(kind)) for name, kind in table_columns
            if name not in entity.exclude_columns]


@router.get("/catalogue")
async def catalogue(request: Request, granted: Scope = Depends(scope)) -> Response:
    settings = request.app.state.settings
    entries = []
    for entity in listed_for(settings.entities, granted.organization_id):
        found = await columns(settings.source.dsn, entity.table) if settings.source else []
        entries.append({"entity": entity, "operations": EVENT_OPERATIONS, "properties": properties(entity, found),
                        "example": example_event(entity, "created", granted.organization_id)})
    operational = operational_entry(granted.organization_id, time.time_ns() // 1_000)
    return page(request, "catalogue.html", scope=granted, entries=entries, operational=operational)
