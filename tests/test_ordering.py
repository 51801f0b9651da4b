"""The per-entity ordering rule, on its own: may this live delivery go now, or must it wait?"""

from __future__ import annotations

from publisher.sending.ordering import followers_wait, lane_key, must_wait


def test_an_ordered_delivery_waits_while_its_entity_waits_in_the_store() -> None:
    assert must_wait(True, False, entity_waits=True)
    assert not must_wait(True, False, entity_waits=False)


def test_catching_up_holds_every_live_change_of_an_ordered_integration() -> None:
    assert must_wait(True, True, entity_waits=False)


def test_unordered_integrations_never_wait() -> None:
    assert not must_wait(False, True, entity_waits=True)
    assert not followers_wait(False, head_settled=False)


def test_followers_wait_only_behind_an_unsettled_head() -> None:
    assert followers_wait(True, head_settled=False) and not followers_wait(True, head_settled=True)


def test_lane_keys_share_a_queue_per_entity_only_when_ordered() -> None:
    assert lane_key(True, "a/1", "msg_5") == lane_key(True, "a/1", "msg_6")
    assert lane_key(False, "a/1", "msg_5") != lane_key(False, "a/1", "msg_6")
