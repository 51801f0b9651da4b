import random

from cdc.backoff import Backoff


def test_grows_to_the_maximum_and_stays_within_jitter() -> None:
    backoff = Backoff(initial=1, maximum=8, rng=random.Random(1))
    delays = [backoff.next_delay(now=float(i)) for i in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_resets_after_a_healthy_connection() -> None:
    backoff = Backoff(initial=1, maximum=8, healthy_after=60, rng=random.Random(1))
    for i in range(4):
        backoff.next_delay(now=float(i))
    backoff.connected(now=100)
    assert backoff.next_delay(now=170) <= 1


def test_a_short_connection_does_not_reset() -> None:
    backoff = Backoff(initial=1, maximum=8, healthy_after=60, rng=random.Random(1))
    for i in range(3):
        backoff.next_delay(now=float(i))
    backoff.connected(now=10)
    assert backoff.next_delay(now=11) >= 4
