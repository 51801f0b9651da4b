"""Which replica identity each captured table gets: pure, told what the catalog says.

Postgres refuses an application's UPDATE and DELETE on a published table whose replica identity
it cannot send: no identity at all, or (Postgres 18) a FULL identity holding a generated column
the publication does not publish. Virtual generated columns are never published, so a table
that has one must never be FULL; stored ones are published when the publication says
``publish_generated_columns = stored``, which walhook's publication does on 18 and later.

The rules, per table (and per partition of a partitioned one):

* FULL (set by anyone) is kept, unless a virtual generated column makes it unsafe: refused.
* DEFAULT with a primary key is upgraded to FULL when the entity asks for it
  (``[[entities]] replica_identity_full``, else ``[source] set_replica_identity_full``), for
  ``oldValue`` and ``updateMask``; a virtual generated column keeps it DEFAULT.
* USING INDEX and NOTHING were chosen by the database's owner: they are kept unless the entity
  itself sets ``replica_identity_full = true``. NOTHING, or DEFAULT without a key, kept as they
  are, is refused: Postgres would refuse the table's UPDATEs and DELETEs once published.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc.errors import SourceError

NAMES = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


@dataclass(frozen=True)
class TableShape:
    """What the catalog says about one relation (a table, or one partition of it)."""

    relation: str
    identity: str  # d(efault), n(othing), f(ull), i(ndex)
    has_key: bool  # a primary key (a partitioned root counts: its partitions are checked themselves)
    virtual_generated: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentityChoice:
    """What walhook does to one relation: ``set_full`` or nothing, and the words that say so."""

    relation: str
    set_full: bool
    summary: str  # for the ready line and ``walhook init --list``
    old_values: bool  # whether updates will carry the whole old row


def choose_identity(shape: TableShape, entity_wants_full: bool | None, source_wants_full: bool) -> IdentityChoice:
    """The replica identity ``shape`` gets; ``SourceError`` when none would leave the app's writes working."""
    relation, identity, virtual = shape.relation, shape.identity, shape.virtual_generated
    if virtual and identity == "f":
        raise SourceError(f"{relation} is REPLICA IDENTITY FULL and has virtual generated column(s) "
                          f"{', '.join(virtual)}, which are never published: once published, Postgres would refuse "
                          f"its UPDATEs and DELETEs; run ALTER TABLE {relation} REPLICA IDENTITY DEFAULT "
                          "(or USING INDEX a unique index)")
    if identity == "f":
        return IdentityChoice(relation, False, "FULL (as set)", True)
    wants_full = entity_wants_full if identity in "in" else (
        entity_wants_full if entity_wants_full is not None else source_wants_full)
    if wants_full and not virtual:
        return IdentityChoice(relation, True, f"{NAMES[identity]} -> FULL (for oldValue and updateMask)", True)
    if identity == "n" or (identity == "d" and not shape.has_key):
        remedy = (f"run ALTER TABLE {relation} REPLICA IDENTITY USING INDEX a unique index on NOT NULL columns "
                  "(a virtual generated column rules out FULL)" if virtual else
                  f"run ALTER TABLE {relation} REPLICA IDENTITY FULL (or USING INDEX a unique index on NOT NULL "
                  "columns), or set replica_identity_full = true on its [[entities]] entry")
        raise SourceError(f"{relation} has no replica identity (no primary key, or REPLICA IDENTITY NOTHING): once "
                          f"published, Postgres would refuse its UPDATEs and DELETEs; {remedy}")
    reason = (f"virtual generated column(s) {', '.join(virtual)} rule out FULL" if virtual and wants_full
              else "as set by the database's owner" if identity == "i" else "FULL not asked for")
    return IdentityChoice(relation, False, f"{NAMES[identity]} kept ({reason}): updates carry no whole old row",
                          False)


def identity_summary(choices: list[IdentityChoice]) -> str:
    """One clause for the capture's ready line: how many relations send whole old rows, and which do not."""
    full = sum(choice.old_values for choice in choices)
    without = [choice.relation for choice in choices if not choice.old_values]
    return f"replica identity FULL on {full}" + (f", without old rows: {', '.join(without)}" if without else "")
