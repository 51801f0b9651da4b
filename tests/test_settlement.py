"""Settlement on its own: a partition commits up to its lowest unsettled record, never past it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from publisher.settling.settlement import Settlement


def take(settlement: Settlement, partition: int, offset: int, deliveries: int) -> None:
    """A record consumed and routed at once."""
    settlement.taken(partition, offset)
    settlement.routed(partition, offset, deliveries)


def test_a_partition_commits_up_to_its_lowest_unsettled_record() -> None:
    settlement = Settlement()
    for offset, deliveries in ((10, 1), (11, 2), (12, 0), (13, 1)):
        take(settlement, 0, offset, deliveries)
    assert settlement.committable() == {0: 10}
    settlement.settle(0, 13)  # a later record settled first: the offset cannot move past 10
    assert settlement.committable() == {0: 10}
    settlement.settle(0, 10)
    settlement.settle(0, 11)
    assert settlement.committable() == {0: 11}  # record 11 has a second delivery in flight
    settlement.settle(0, 11)
    assert settlement.committable() == {0: 14} and settlement.unsettled() == 0


def test_records_without_deliveries_settle_at_once_and_partitions_are_apart() -> None:
    settlement = Settlement()
    take(settlement, 0, 5, 0)
    take(settlement, 1, 7, 1)
    assert settlement.committable() == {0: 6, 1: 7}
    assert settlement.unsettled([0]) == 0 and settlement.unsettled([1]) == 1


def test_a_partition_let_go_is_forgotten_and_late_settlements_are_ignored() -> None:
    settlement = Settlement()
    take(settlement, 3, 1, 1)
    settlement.forget([3])
    settlement.settle(3, 1)
    assert settlement.committable() == {} and settlement.unsettled() == 0


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40), st.randoms())
def test_the_committable_offset_never_passes_an_unsettled_record(counts: list[int], rng: object) -> None:
    settlement = Settlement()
    open_deliveries = [(offset, n) for offset, n in enumerate(counts) for _ in range(n)]
    for offset in range(len(counts)):
        settlement.taken(0, offset)
    routing_order = list(enumerate(counts))
    rng.shuffle(routing_order)  # type: ignore[attr-defined]
    unrouted = set(range(len(counts)))
    for offset, n in routing_order:  # organizations are routed in turns: out of offset order
        settlement.routed(0, offset, n)
        unrouted.discard(offset)
        lowest_open = min([o for o in unrouted] + [o for o, k in enumerate(counts) if k and o not in unrouted],
                          default=len(counts))
        assert settlement.committable()[0] == lowest_open
    rng.shuffle(open_deliveries)  # type: ignore[attr-defined]
    remaining = {offset: n for offset, n in enumerate(counts)}
    for offset, _ in open_deliveries:
        settlement.settle(0, offset)
        remaining[offset] -= 1
        lowest_open = min((o for o, n in remaining.items() if n), default=len(counts))
        assert settlement.committable()[0] == lowest_open


def test_a_record_not_routed_yet_holds_its_partition_back() -> None:
    settlement = Settlement()
    for offset in (3, 4, 5):
        settlement.taken(0, offset)
    settlement.routed(0, 5, 0)  # a later record of another organization, routed first
    settlement.routed(0, 4, 1)
    assert settlement.committable() == {0: 3} and settlement.unsettled() == 2
    settlement.routed(0, 3, 0)
    assert settlement.committable() == {0: 4}
    settlement.settle(0, 4)
    assert settlement.committable() == {0: 6} and settlement.unsettled() == 0


def test_a_settlement_before_routing_or_after_letting_go_is_ignored() -> None:
    settlement = Settlement()
    settlement.taken(0, 1)
    settlement.settle(0, 1)  # no delivery of it exists yet: nothing to count down
    assert settlement.committable() == {0: 1}
    settlement.forget([0])
    settlement.routed(0, 1, 2)
    assert settlement.committable() == {} and settlement.unsettled() == 0
