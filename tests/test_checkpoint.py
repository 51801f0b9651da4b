"""The confirm rule: never past an unacknowledged event, never backwards."""

from cdc.checkpoint import AckTracker


def test_confirms_only_after_commit_and_every_ack() -> None:
    tracker = AckTracker(100)
    tx = tracker.begin()
    tracker.sent(tx)
    tracker.sent(tx)
    tracker.commit(tx, 200)
    assert tracker.confirmed_lsn == 100
    tracker.acknowledged(tx)
    assert tracker.confirmed_lsn == 100
    tracker.acknowledged(tx)
    assert tracker.confirmed_lsn == 200


def test_a_later_transaction_waits_for_an_earlier_one() -> None:
    tracker = AckTracker(0)
    first, second = tracker.begin(), None
    tracker.sent(first)
    tracker.commit(first, 10)
    second = tracker.begin()
    tracker.sent(second)
    tracker.commit(second, 20)
    tracker.acknowledged(second)
    assert tracker.confirmed_lsn == 0  # the first is still in flight
    tracker.acknowledged(first)
    assert tracker.confirmed_lsn == 20


def test_transactions_without_events_confirm_at_commit() -> None:
    tracker = AckTracker(5)
    tracker.commit(tracker.begin(), 50)
    assert tracker.confirmed_lsn == 50


def test_never_moves_backwards() -> None:
    tracker = AckTracker(500)
    tracker.commit(tracker.begin(), 400)
    tracker.idle_at(300)
    assert tracker.confirmed_lsn == 500


def test_keepalive_position_confirmed_only_when_nothing_is_open() -> None:
    tracker = AckTracker(0)
    tx = tracker.begin()
    tracker.idle_at(1000)
    assert tracker.confirmed_lsn == 0
    tracker.commit(tx, 900)
    tracker.idle_at(1000)
    assert tracker.confirmed_lsn == 1000
    assert tracker.in_flight == 0
