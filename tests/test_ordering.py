"""The per-entity ordering rule, on its own: may this delivery go now, or must it wait?"""

from __future__ import annotations

from publisher.ordering import RecentlyDelivered, followers_wait, lane_key, may_go_now


def test_an_ordered_delivery_waits_for_an_earlier_pending_one_held_nowhere_here() -> None:
    assert not may_go_now(True, False, (7,), settled_here=set(), queued_ahead=set())


def test_it_goes_when_every_earlier_one_is_queued_ahead_or_delivered_here() -> None:
    assert may_go_now(True, False, (1, 2), settled_here={2}, queued_ahead={1})
    assert may_go_now(True, False, (), settled_here=set(), queued_ahead=set())


def test_catching_up_holds_every_live_change_of_an_ordered_integration() -> None:
    assert not may_go_now(True, True, (), settled_here=set(), queued_ahead=set())


def test_unordered_integrations_never_wait() -> None:
    assert may_go_now(False, True, (1, 2, 3), settled_here=set(), queued_ahead=set())
    assert not followers_wait(False, head_settled=False)


def test_followers_wait_only_behind_an_unsettled_head() -> None:
    assert followers_wait(True, head_settled=False) and not followers_wait(True, head_settled=True)


def test_lane_keys_share_a_queue_per_entity_only_when_ordered() -> None:
    assert lane_key(True, "a/1", 5) == lane_key(True, "a/1", 6)
    assert lane_key(False, "a/1", 5) != lane_key(False, "a/1", 6)


def test_recently_delivered_forgets_after_two_generations() -> None:
    memory = RecentlyDelivered(seconds=10, now=0.0)
    memory.add(1, now=1.0)
    assert 1 in memory and 2 not in memory
    memory.add(3, now=12.0)  # swaps: 1 is in the previous generation now
    assert 1 in memory and 3 in memory
    memory.add(4, now=23.0)
    assert 1 not in memory and 3 in memory and 4 in memory
