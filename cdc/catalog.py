"""Look up types that are not built in (domains, enums, their arrays) in the source's catalog.

pgoutput names each column's type by OID only. For user-defined types walhook asks
``pg_type`` once, when a Relation message first uses the OID, so a domain over ``int4``
still arrives as a JSON number and an array of enums as a list of labels.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from cdc.values import UserType, is_builtin


async def lookup_types(conn: psycopg.AsyncConnection, oids: Iterable[int],
                       known: dict[int, UserType]) -> dict[int, UserType]:
    """Describe ``oids`` and every type they lead to (a domain's base, an array's element)."""
    found: dict[int, UserType] = {}
    pending = {oid for oid in oids if not is_builtin(oid) and oid not in known}
    while pending:
        cursor = await conn.execute(
            "SELECT oid::int, typbasetype::int, CASE WHEN typcategory = 'A' THEN typelem::int ELSE 0 END "
            "FROM pg_type WHERE oid = ANY(%s)", [list(pending)])
        rows = await cursor.fetchall()
        for oid, base, element in rows:
            found[oid] = UserType(oid, base, element)
        pending = {next_oid for _, base, element in rows for next_oid in (base, element)
                   if next_oid and not is_builtin(next_oid) and next_oid not in known and next_oid not in found}
    return found
