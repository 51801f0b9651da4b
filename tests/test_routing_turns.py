"""Routing in turns on its own: one organization's costly records cannot hold up another's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from publisher.routing.turns import RoutingTurns


class Clock:
    """Routing time as the test says it passes: each record costs what its organization's records cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def router(clock: Clock, cost: dict[str, float]):  # type: ignore[no-untyped-def]
    def route(item: tuple[str, int]) -> tuple[str, int]:
        clock.now += cost[item[0]]
        return item
    return route


def test_a_quiet_record_waits_one_slice_not_a_whole_costly_backlog() -> None:
    clock = Clock()
    turns: RoutingTurns[tuple[str, int]] = RoutingTurns(clock, slice_seconds=0.002)
    for n in range(1000):
        turns.add("noisy", ("noisy", n))  # 0.4 ms each: 400 ms of routing in all
    turns.add("quiet", ("quiet", 0))
    route = router(clock, {"noisy": 0.0004, "quiet": 0.00001})
    first = turns.route(route, seconds=0.01)
    assert ("quiet", 0) in first and first.index(("quiet", 0)) <= 5  # after at most one slice (5 noisy records)
    assert len(turns) == 1001 - len(first)


def test_an_organization_that_spent_more_goes_after_one_that_spent_less() -> None:
    clock = Clock()
    turns: RoutingTurns[tuple[str, int]] = RoutingTurns(clock, slice_seconds=0.001)
    route = router(clock, {"noisy": 0.001, "quiet": 0.0001})
    for n in range(100):
        turns.add("noisy", ("noisy", n))
    routed = turns.route(route, seconds=0.05)  # the noisy one alone: 50 records
    for n in range(20):
        turns.add("quiet", ("quiet", n))
        turns.add("noisy", ("noisy", 100 + n))
    routed = turns.route(route, seconds=0.005)
    quiet = [item for item in routed if item[0] == "quiet"]
    assert len(quiet) == 20 and len(routed) < 30  # shares by time: 2 ms of quiet records, 3 ms of noisy ones


def test_an_idle_organization_earns_no_credit() -> None:
    clock = Clock()
    turns: RoutingTurns[tuple[str, int]] = RoutingTurns(clock, slice_seconds=0.001)
    route = router(clock, {"a": 0.001, "b": 0.001})
    for n in range(50):
        turns.add("a", ("a", n))
    turns.route(route, seconds=0.05)  # a routed alone for 50 ms
    for n in range(10):
        turns.add("a", ("a", 100 + n))
        turns.add("b", ("b", n))
    routed = turns.route(route, seconds=0.01)
    assert abs(sum(item[0] == "a" for item in routed) - sum(item[0] == "b" for item in routed)) <= 1


def test_records_of_partitions_let_go_are_taken_out_in_their_order() -> None:
    clock = Clock()
    turns: RoutingTurns[tuple[str, int]] = RoutingTurns(clock)
    for n in range(6):
        turns.add("a" if n % 2 else "b", ("a" if n % 2 else "b", n))
    assert sorted(turns.take(lambda item: item[1] < 3)) == [("a", 1), ("b", 0), ("b", 2)]
    assert len(turns) == 3 and turns.waiting() == {"a": 2, "b": 1}
    assert turns.route(router(clock, {"a": 0.0, "b": 0.0}), seconds=1.0) in (
        [("b", 4), ("a", 3), ("a", 5)], [("a", 3), ("a", 5), ("b", 4)])
    assert turns.take(lambda item: True) == [] and not turns.waiting()


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(min_value=0.0, max_value=0.003)), max_size=60),
       st.floats(min_value=0.0, max_value=0.02))
def test_every_record_is_routed_once_and_each_organization_keeps_its_order(
        records: list[tuple[str, float]], seconds: float) -> None:
    clock = Clock()
    turns: RoutingTurns[tuple[str, int, float]] = RoutingTurns(clock)
    for n, (organization, cost) in enumerate(records):
        turns.add(organization, (organization, n, cost))

    def route(item: tuple[str, int, float]) -> tuple[str, int, float]:
        clock.now += item[2]
        return item
    routed: list[tuple[str, int, float]] = []
    while len(turns):
        taken = turns.route(route, seconds)
        assert taken  # every call makes progress
        routed += taken
    assert sorted(item[1] for item in routed) == list(range(len(records)))
    for organization in "abc":
        order = [item[1] for item in routed if item[0] == organization]
        assert order == sorted(order)
