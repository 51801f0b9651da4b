"""Prepare the source database for capture, and say exactly what to change when it is not.

At start the CDC process checks ``wal_level``, that every configured table exists, the
publication (created for exactly the configured tables, extended when the configuration
adds one, ``publish_via_partition_root`` and on Postgres 18 ``publish_generated_columns``), each
table's replica identity (``cdc.identity``: set before the table is published, never so that the
application's writes would fail), and the slot
(created when missing, must use pgoutput, must not be active elsewhere). On Postgres 17+ the slot
is a failover slot (``[source] failover``); a slot that vanished is not recreated silently
(``cdc.memory``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from cdc.errors import ReplicationLost, SlotBusyError, SlotInvalidated, SourceError
from cdc.failover import failover_supported
from cdc.identity import IdentityChoice, TableShape, choose_identity
from cdc.lsn import SLOT_LAG_BYTES, parse_lsn
from cdc.memory import ServerIdentity, SlotKeeper
from models.dsn import primary_dsn
from models.settings import EntitySettings, SourceSettings

log = logging.getLogger("walhook.cdc")


@dataclass(frozen=True)
class SlotState:
    name: str
    confirmed_flush_lsn: int
    created: bool
    needs_failover: bool = False  # an existing slot to switch to FAILOVER (ALTER_REPLICATION_SLOT)
    failover: bool = False  # a failover slot once started (after the switch, if one is needed)


async def connect_control(dsn: str) -> psycopg.AsyncConnection:
    """An ordinary connection for checks, catalog lookups and heartbeats.

    ``client_encoding=utf8``: in a SQL_ASCII database psycopg would otherwise return bytes,
    not text, for every catalog value.
    """
    return await psycopg.AsyncConnection.connect(primary_dsn(dsn), autocommit=True, client_encoding="utf8")


async def prepare_source(settings: SourceSettings, entities: Sequence[EntitySettings]) -> list[IdentityChoice]:
    """Check and set up everything capture needs but the slot (``prepare_slot``); what each table's
    replica identity became (``cdc.identity``).

    The replica identities and the publication change in one transaction that ends by asking
    Postgres to plan an UPDATE and a DELETE of every captured table: if the application's writes
    would be refused once published, nothing is changed and capture does not start. A database
    that cannot be reached raises ``ReplicationLost`` (retried); anything that needs a person to
    change something raises ``SourceError`` naming it.
    """
    tables = [entity.table for entity in entities]
    try:
        async with await connect_control(settings.dsn) as conn:
            await _check_wal_level(conn)
            await _check_privileges(conn)
            await _check_tables(conn, entities)
            async with conn.transaction():
                # Identity before publication: Postgres refuses UPDATE and DELETE on a published table without one.
                choices = await _set_replica_identity(conn, entities, settings.set_replica_identity_full)
                await ensure_publication(conn, settings.publication, tables)
                for table in tables:
                    await _check_writes_still_work(conn, table)
    except psycopg.OperationalError as exc:
        raise ReplicationLost(f"cannot reach the source database: {exc}") from exc
    except psycopg.Error as exc:
        raise SourceError(f"preparing the source database failed: {exc}") from exc
    return choices


async def prepare_slot(settings: SourceSettings, server: ServerIdentity, keeper: SlotKeeper) -> SlotState:
    """The slot's position on ``server`` (created when missing and the keeper allows it)."""
    try:
        async with await connect_control(settings.dsn) as conn:
            return await ensure_slot(conn, settings, server, keeper)
    except psycopg.OperationalError as exc:
        raise ReplicationLost(f"cannot reach the source database: {exc}") from exc
    except psycopg.Error as exc:
        raise SourceError(f"preparing the replication slot failed: {exc}") from exc


async def slot_lag_bytes(conn: psycopg.AsyncConnection, slot: str) -> int | None:
    """How many bytes of WAL the server keeps for ``slot`` beyond what walhook confirmed (``SLOT_LAG_BYTES``)."""
    cursor = await conn.execute(f"SELECT {SLOT_LAG_BYTES} FROM pg_replication_slots WHERE slot_name = %s", [slot])
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _check_wal_level(conn: psycopg.AsyncConnection) -> None:
    level = (await (await conn.execute("SHOW wal_level")).fetchone())[0]  # type: ignore[index]
    if level != "logical":
        raise SourceError(f"wal_level is {level!r}; set wal_level = logical in postgresql.conf and restart Postgres")


async def _check_privileges(conn: psycopg.AsyncConnection) -> None:
    cursor = await conn.execute("SELECT current_user, rolreplication OR rolsuper FROM pg_roles "
                                "WHERE rolname = current_user")
    row = await cursor.fetchone()
    if row is not None and not row[1]:
        raise SourceError(f"role {row[0]} may not stream changes; run ALTER ROLE {row[0]} REPLICATION "
                          "(and make it owner of the captured tables, or create the publication for it)")


async def _check_tables(conn: psycopg.AsyncConnection, entities: Sequence[EntitySettings]) -> None:
    for entity in entities:
        row = await (await conn.execute("SELECT to_regclass(%s)::oid", [_quoted(entity.table)])).fetchone()
        if row is None or row[0] is None:
            raise SourceError(f"table {entity.table} named in [[entities]] does not exist in the source database")
        cursor = await conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                                    "AND NOT attisdropped", [row[0]])
        columns = {name for (name,) in await cursor.fetchall()}
        missing = sorted(entity.columns_used() - columns)
        if missing:
            raise SourceError(f"[[entities]] table {entity.table}: column(s) {', '.join(missing)} named in the "
                              f"mapping do not exist (table has: {', '.join(sorted(columns))})")


async def ensure_publication(conn: psycopg.AsyncConnection, name: str, tables: Sequence[str]) -> None:
    """Create the publication for ``tables``, add the tables it lacks, and set its options.

    ``publish_via_partition_root``: a partitioned table's changes arrive under its own name.
    ``publish_generated_columns = stored`` (Postgres 18 and later): stored generated columns are
    published, so a FULL replica identity that holds one is valid (see ``cdc.identity``).
    """
    options = await _publication_options(conn)
    cursor = await conn.execute(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s", [name])
    published = {row[0] for row in await cursor.fetchall()}
    exists = (await (await conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name])).fetchone())
    table_list = sql.SQL(", ").join(_identifier(table) for table in tables)
    with_options = sql.SQL(", ").join(sql.SQL(f"{key} = {value}") for key, value in options.items())
    if not exists:
        await conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH ({})")
                           .format(sql.Identifier(name), table_list, with_options))
        log.info("created publication %s for %s", name, ", ".join(tables))
        return
    missing = [table for table in tables if table not in published]
    if missing:
        await conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(name), sql.SQL(", ").join(_identifier(table) for table in missing)))
        log.info("added %s to publication %s", ", ".join(missing), name)
    if await _options_differ(conn, name, options):
        await conn.execute(sql.SQL("ALTER PUBLICATION {} SET ({})").format(sql.Identifier(name), with_options))
        log.info("set publication %s options: %s", name, ", ".join(f"{k} = {v}" for k, v in options.items()))


async def _publication_options(conn: psycopg.AsyncConnection) -> dict[str, str]:
    version = int((await (await conn.execute("SHOW server_version_num")).fetchone())[0])  # type: ignore[index]
    options = {"publish_via_partition_root": "true"}
    if version >= 180000:
        options["publish_generated_columns"] = "stored"
    return options


async def _options_differ(conn: psycopg.AsyncConnection, name: str, options: dict[str, str]) -> bool:
    generated = "pubgencols = 's'" if "publish_generated_columns" in options else "true"
    cursor = await conn.execute(f"SELECT pubviaroot AND {generated} FROM pg_publication WHERE pubname = %s", [name])
    row = await cursor.fetchone()
    return row is not None and not row[0]


_SHAPES = """
SELECT c.oid::regclass::text, c.relreplident,
       c.relkind = 'p' OR EXISTS (SELECT 1 FROM pg_index WHERE indrelid = c.oid AND indisprimary),
       coalesce((SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute WHERE attrelid = c.oid
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = 'v'), '{}')
FROM pg_class c WHERE c.oid = to_regclass(%(t)s) OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(t)s)))
"""


async def table_shapes(conn: psycopg.AsyncConnection, table: str) -> list[TableShape]:
    """``table`` and each of its partitions, as ``cdc.identity`` needs them: Postgres decides what old
    row to send per partition, so each has its own identity."""
    cursor = await conn.execute(_SHAPES, {"t": _quoted(table)})
    return [TableShape(relation, identity, has_key, tuple(virtual))
            for relation, identity, has_key, virtual in await cursor.fetchall()]


async def _set_replica_identity(conn: psycopg.AsyncConnection, entities: Sequence[EntitySettings],
                                source_wants_full: bool) -> list[IdentityChoice]:
    choices = []
    for entity in entities:
        for shape in await table_shapes(conn, entity.table):
            choice = choose_identity(shape, entity.replica_identity_full, source_wants_full)
            if choice.set_full:
                await conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.SQL(choice.relation)))
            log.info("%s: replica identity %s", choice.relation, choice.summary)
            choices.append(choice)
    return choices


async def partitioned_roots(dsn: str, tables: Sequence[str]) -> set[int]:
    """The relation OIDs of the partitioned tables among ``tables`` (``cdc.moves`` joins their rows' moves)."""
    try:
        async with await connect_control(dsn) as conn:
            cursor = await conn.execute("SELECT oid::bigint FROM pg_class WHERE relkind = 'p' "
                                        "AND oid = ANY(%s::regclass[])", [[_quoted(table) for table in tables]])
            return {int(oid) for (oid,) in await cursor.fetchall()}
    except psycopg.OperationalError as exc:
        raise ReplicationLost(f"cannot reach the source database: {exc}") from exc


async def adopt_new_partitions(conn: psycopg.AsyncConnection, entities: Sequence[EntitySettings],
                               source_wants_full: bool, known: set[str]) -> list[IdentityChoice]:
    """Give a partition attached while capture runs the identity its table's rule gives (FULL, usually),
    so that its updates carry old rows without a restart. Relations in ``known`` were prepared at start;
    one the rules refuse is named in a warning and left as it is (the stream goes on)."""
    adopted = []
    for entity in entities:
        for shape in await table_shapes(conn, entity.table):
            if shape.relation in known:
                continue
            try:
                choice = choose_identity(shape, entity.replica_identity_full, source_wants_full)
            except SourceError as exc:
                log.warning("new partition: %s", exc)
                known.add(shape.relation)
                continue
            if choice.set_full:
                await conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.SQL(choice.relation)))
            log.info("%s (attached while capturing): replica identity %s", choice.relation, choice.summary)
            known.add(shape.relation)
            adopted.append(choice)
    return adopted


async def _check_writes_still_work(conn: psycopg.AsyncConnection, table: str) -> None:
    """Ask Postgres to plan a DELETE and an UPDATE of ``table`` (nothing runs, no trigger fires): it
    refuses them at planning when the replica identity cannot be sent, as it would the app's."""
    cursor = await conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum LIMIT 1", [_quoted(table)])
    column = await cursor.fetchone()
    statements = [sql.SQL("EXPLAIN DELETE FROM {} WHERE false").format(_identifier(table))]
    if column is not None:
        statements.append(sql.SQL("EXPLAIN UPDATE {} SET {} = {} WHERE false").format(
            _identifier(table), sql.Identifier(column[0]), sql.Identifier(column[0])))
    for statement in statements:
        try:
            async with conn.transaction():  # a savepoint: a refusal for want of privileges is not ours to judge
                await conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise SourceError(f"capturing {table} would make Postgres refuse the application's writes "
                              f"({str(exc).strip().splitlines()[0]}); nothing was changed") from exc


async def ensure_slot(conn: psycopg.AsyncConnection, settings: SourceSettings, server: ServerIdentity,
                      keeper: SlotKeeper) -> SlotState:
    """Create the pgoutput slot if missing and allowed; refuse a foreign plugin or a slot in use."""
    slot = settings.slot
    failover = settings.failover and failover_supported(server.version)
    if settings.failover and not failover:
        keeper.say_once("no-failover", f"Postgres {server.version // 10000} has no failover slots (17 and later "
                        f"do): slot {slot} will not survive a promotion of a standby")
    cursor = await conn.execute(
        "SELECT plugin, active_pid, confirmed_flush_lsn::text, wal_status, "
        f"{'failover' if failover_supported(server.version) else 'false'} FROM pg_replication_slots "
        "WHERE slot_name = %s", [slot])
    row = await cursor.fetchone()
    await keeper.check(server, slot, row is not None)
    if row is None:
        return await _create_slot(conn, slot, failover)
    plugin, active_pid, confirmed, wal_status, is_failover = row
    if wal_status == "lost":
        raise SlotInvalidated(slot)
    if plugin != "pgoutput":
        raise SourceError(f"replication slot {slot!r} uses plugin {plugin!r}, not pgoutput; "
                          "drop it or choose another [source] slot name")
    if active_pid is not None:
        raise SlotBusyError(f"replication slot {slot!r} is in use by process {active_pid}"
                            f"{await _holder(conn, active_pid)}; "
                            "stop the other consumer or give this one its own [source] slot")
    return SlotState(slot, parse_lsn(confirmed) if confirmed else 0, False, failover and not is_failover,
                     bool(is_failover) or failover)


async def _create_slot(conn: psycopg.AsyncConnection, slot: str, failover: bool) -> SlotState:
    # (name, plugin, temporary, two_phase, failover): the fifth argument exists from Postgres 17 on.
    arguments = "%s, 'pgoutput', false, false, true" if failover else "%s, 'pgoutput'"
    cursor = await conn.execute(f"SELECT lsn::text FROM pg_create_logical_replication_slot({arguments})", [slot])
    created = await cursor.fetchone()
    assert created is not None
    log.info("created %sreplication slot %s at %s", "failover " if failover else "", slot, created[0])
    return SlotState(slot, parse_lsn(created[0]), True, failover=failover)


async def _holder(conn: psycopg.AsyncConnection, pid: int) -> str:
    """Who streams through backend ``pid``, for the operator looking for it: `` (walhook-cdc from 10.0.0.5, ...)``."""
    cursor = await conn.execute(
        "SELECT application_name, coalesce(host(client_addr), 'a local socket'), "
        "to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "FROM pg_stat_activity WHERE pid = %s", [pid])
    row = await cursor.fetchone()
    if row is None:  # the holder has just gone, or this role may not see it
        return ""
    application, client, since = row
    return f" ({application or 'no application_name'} from {client}, streaming since {since})"


def _quoted(table: str) -> str:
    schema, _, name = table.rpartition(".")
    return f'"{schema}"."{name}"'


def _identifier(table: str) -> sql.Identifier:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema, name)
