"""The watermark rule (pure): which rows of a chunk may go out at its high mark, and the chunk sizes."""

from __future__ import annotations

import pytest

from cdc.watermark import ChunkSizer, KeyWatch, Snapshot, survivors
from models.filters import Condition, FilterError, parse_filter

SNAPSHOT = Snapshot.parse("100:105:101,103")


@pytest.mark.parametrize(("xid", "seen"), [(99, True), (100, True), (101, False), (102, True), (103, False),
                                           (104, True), (105, False), (200, False)])
def test_a_snapshot_sees_what_committed_before_it(xid: int, seen: bool) -> None:
    assert SNAPSHOT.sees(xid) is seen


def test_32_bit_ids_are_placed_in_the_snapshots_epoch() -> None:
    wrapped = Snapshot.parse(f"{(3 << 32) + 10}:{(3 << 32) + 20}:")
    assert wrapped.full_xid(15) == (3 << 32) + 15
    assert wrapped.full_xid(0xFFFFFFF0) == (2 << 32) + 0xFFFFFFF0  # just before the wrap: older, seen
    assert wrapped.sees(0xFFFFFFF0) and not wrapped.sees(25)


def test_rows_changed_by_a_transaction_the_snapshot_missed_are_left_out() -> None:
    watch = KeyWatch([0], before=frozenset())
    watch.note(102, (b"1", b"x"))            # seen by the snapshot: the row read has it
    watch.note(103, (b"2", b"y"))            # running at the snapshot: the read is stale
    watch.note(110, None, (b"3", b"z"))      # a delete after the snapshot: stale too
    keys = [(b"1",), (b"2",), (b"3",), (b"4",)]
    assert survivors(keys, watch.superseded(SNAPSHOT)) == [0, 3]
    watch.decided(SNAPSHOT)
    assert len(watch) == 2  # what the snapshot saw is forgotten; the rest stays for the next chunk
    later = Snapshot.parse("111:111:")
    assert watch.superseded(later) == set()


def test_a_key_change_marks_both_keys() -> None:
    watch = KeyWatch([1], before=frozenset())
    watch.note(120, ("a", b"new"), ("a", b"old"))  # type: ignore[arg-type]
    assert watch.superseded(SNAPSHOT) == {(b"new",), (b"old",)}


def test_a_transaction_sent_before_the_watch_but_still_running_makes_the_chunk_unsafe() -> None:
    assert KeyWatch([0], before=frozenset({103})).unsafe(SNAPSHOT)
    assert not KeyWatch([0], before=frozenset({102, 99})).unsafe(SNAPSHOT)


def test_an_overflowing_watch_starts_over() -> None:
    watch = KeyWatch([0], before=frozenset(), limit=2)
    for n in range(3):
        watch.note(200, (str(n).encode(),))
    assert watch.unsafe(SNAPSHOT)
    watch.restart(frozenset({1}))
    assert len(watch) == 0 and not watch.unsafe(SNAPSHOT)


def test_chunks_grow_when_quick_and_shrink_when_slow_or_large() -> None:
    sizer = ChunkSizer(rows=1000, minimum=10, maximum=4000, target=1.0, max_bytes=1000)
    sizer.after(0.1, 10)
    assert sizer.rows == 2000
    sizer.after(0.1, 10)
    sizer.after(0.1, 10)
    assert sizer.rows == 4000
    sizer.after(1.5, 10)
    assert sizer.rows == 2000
    sizer.after(0.1, 5000)
    assert sizer.rows == 1000
    while sizer.timed_out():
        pass
    assert sizer.rows == 10


@pytest.mark.parametrize(("text", "conditions"), [
    ("id > 5", [Condition("id", ">", ("5",))]),
    ("Status = 'it''s' AND n != -1.5", [Condition("status", "=", ("it's",)), Condition("n", "<>", ("-1.5",))]),
    ('"Order Id" IS NOT NULL and x is null', [Condition("Order Id", "is not null"), Condition("x", "is null")]),
    ("kind IN ('a', 'b') AND ok = true", [Condition("kind", "in", ("a", "b")), Condition("ok", "=", ("true",))]),
])
def test_filters_parse(text: str, conditions: list[Condition]) -> None:
    assert parse_filter(text) == conditions


@pytest.mark.parametrize(("text", "message"), [
    ("id > 5 OR true", "expected AND"), ("id >", "expected a value"), ("id; DROP TABLE x", "cannot read"),
    ("(SELECT 1) = 1", "expected a column name"), ("kind IN ('a'", "not closed"), ("", "empty"),
    ("id = other_column", "expected a value"),
])
def test_bad_filters_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(text)


class _Writer:
    def __init__(self) -> None:
        self.sent: list[tuple[dict, object, list | None]] = []

    def append(self, event: dict, token: object, extra_headers: list | None = None) -> None:
        self.sent.append((event, token, extra_headers))

    def dead_letter(self, event: dict, error: BaseException, token: object) -> None:
        raise AssertionError("no row here is unconvertible")

    async def send_ready(self) -> None:
        return None

    async def flush(self) -> None:
        return None


async def test_the_stream_decides_a_chunk_only_at_its_own_mark_and_later_changes_win() -> None:
    """A mark from an earlier read (same backfill and chunk number) is not this read's: it sits before its
    snapshot in the WAL. At its own mark the chunk is decided; its rows then go out in slices, stamped with
    the mark's position, except those the stream changed after the mark (the change is newer)."""
    from cdc.backfill import BackfillStream, PendingChunk
    from cdc.entities import TransactionContext
    from cdc.pgoutput import Column, LogicalMessage, Relation

    stream = BackfillStream()
    stream.recent.saw(90)
    relation = Relation(41, "public", "items", "f", (Column("name", 25, -1, False), Column("id", 23, -1, True)))
    stream.watch("public.items", ["id"], [relation])
    stream.watches[41].note(103, (b"x", b"2"))  # a change the snapshot did not see
    events = [{"eventId": "", "n": n} for n in range(4)]
    keys = [(b"1",), (b"2",), (b"3",), (b"4",)]
    chunk = PendingChunk(7, 4, keys, events, SNAPSHOT, [("walhook-backfill-id", b"7")])
    stream.expect(chunk)
    mark = TransactionContext(120, 0x16F7C68, 1_700_000_000_000_000)
    stream.at_mark(LogicalMessage(True, 1, "walhook.backfill.high", PendingChunk(7, 4, [], [], SNAPSHOT, []).mark),
                   mark)
    assert not chunk.decided.done()
    stream.at_mark(LogicalMessage(True, 1, "walhook.backfill.high", chunk.mark), mark)
    outcome = chunk.decided.result()
    assert (outcome.keep, outcome.again) == ((0, 2, 3), False)
    writer = _Writer()
    stream.emit_slice(chunk, outcome.keep[:1], writer)
    stream.watches[41].note(130, (b"y", b"3"))  # after the mark, before row 3 went out: the change wins
    stream.emit_slice(chunk, outcome.keep[1:], writer)
    stream.emitted(chunk)
    assert [event["n"] for event, _, _ in writer.sent] == [0, 3] and chunk.published == 2
    assert [event["eventId"] for event, _, _ in writer.sent] == ["evt_00000000016F7C68_r7_000000",
                                                                 "evt_00000000016F7C68_r7_000001"]
    assert writer.sent[0][0]["transaction"] == {"id": 120, "commitLsn": "0/16F7C68", "index": 0}
    assert not chunk.acked.is_set()
    chunk.acknowledged(2)
    assert chunk.acked.is_set()
