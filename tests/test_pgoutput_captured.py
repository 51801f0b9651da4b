"""The decoder on bytes a real Postgres 18 sent (see tests/fixtures/capture_pgoutput.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pgoutput_v1.json").read_text())


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return [decode(bytes.fromhex(payload)) for payload in FIXTURE["payloads"]]


def of(messages: list[Message], kind: type) -> list:  # type: ignore[type-arg]
    return [message for message in messages if isinstance(message, kind)]


def test_every_message_type_decodes(messages: list[Message]) -> None:
    kinds = {type(message) for message in messages}
    assert kinds == {Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage}


def test_transactions_are_well_formed(messages: list[Message]) -> None:
    begins, commits = of(messages, Begin), of(messages, Commit)
    assert len(begins) == len(commits) == 8  # the non-transactional message has no Begin/Commit
    for begin, commit in zip(begins, commits, strict=True):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_time_us == commit.commit_time_us > 1_700_000_000_000_000
    assert [b.xid for b in begins] == sorted(b.xid for b in begins)


def test_relations_types_and_the_enum(messages: list[Message]) -> None:
    enum = of(messages, Type)[0]
    assert (enum.namespace, enum.name) == ("public", "mood")
    moods = next(r for r in of(messages, Relation) if r.name == "moods")
    assert moods.namespace == "public" and moods.replica_identity == "f"
    assert [(c.name, c.type_oid) for c in moods.columns] == [("id", 23), ("name", 25), ("mood", enum.oid),
                                                             ("big", 25)]
    keyed = next(r for r in of(messages, Relation) if r.name == "keyed")
    assert keyed.replica_identity == "d" and [c.is_key for c in keyed.columns] == [True, False]


def test_rows_old_tuples_and_unchanged_toast(messages: list[Message]) -> None:
    big = FIXTURE["big_value"].encode()
    first = of(messages, Insert)[0]
    assert first.new == (b"1", b"first", b"happy", big)
    full_update, key_update = of(messages, Update)
    assert full_update.old == (b"1", b"first", b"happy", big) and not full_update.old_is_key_only
    assert full_update.new == (b"1", b"renamed", b"happy", UNCHANGED_TOAST)
    assert key_update.old_is_key_only and key_update.old == (b"1", None)
    assert key_update.new == (b"2", b"k")
    (delete,) = of(messages, Delete)
    assert delete.old_is_key_only and delete.old == (b"2", None)
    assert of(messages, Insert)[2].new == (b"3", None)


def test_messages_truncate_and_origin(messages: list[Message]) -> None:
    inside, outside = of(messages, LogicalMessage)
    assert (inside.transactional, inside.prefix, inside.content) == (True, "app", b"inside")
    assert (outside.transactional, outside.prefix, outside.content) == (False, "walhook.heartbeat", b"outside")
    (truncate,) = of(messages, Truncate)
    relations = {r.oid: r.name for r in of(messages, Relation)}
    assert {relations[oid] for oid in truncate.relation_oids} == {"moods", "keyed"}
    assert not truncate.cascade and not truncate.restart_identity
    (origin,) = of(messages, Origin)
    assert origin.name == "fixture_origin"
