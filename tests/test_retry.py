"""The retry decisions, without a clock or a network."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from publisher.sending.retry import DEFAULT_SCHEDULE, RetryPolicy, Verdict, retry_after_seconds

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def policy(schedule: tuple[float, ...] = DEFAULT_SCHEDULE) -> RetryPolicy:
    return RetryPolicy(schedule=schedule, rng=random.Random(3))


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert policy().decide(1, status, None, NOW).verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [None, 301, 302, 307, 400, 404, 500, 502, 504])
def test_failures_follow_the_schedule_with_jitter(status: int | None) -> None:
    for attempt, base in enumerate(DEFAULT_SCHEDULE[1:], start=1):
        decision = policy().decide(attempt, status, None, NOW)
        assert decision.verdict is Verdict.RETRY
        assert base * 0.8 <= decision.delay <= base * 1.2


def test_the_default_schedule_is_the_documented_one() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_exhausted_after_the_last_attempt() -> None:
    assert policy().decide(len(DEFAULT_SCHEDULE), 500, None, NOW).verdict is Verdict.FAILED
    assert policy((0, 1)).decide(2, None, None, NOW).verdict is Verdict.FAILED


def test_410_means_gone() -> None:
    assert policy().decide(1, 410, None, NOW).verdict is Verdict.GONE


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_when_longer_than_the_schedule(status: int) -> None:
    decision = policy().decide(1, status, "120", NOW)
    assert decision.verdict is Verdict.RETRY and decision.delay == 120
    assert policy().decide(2, status, "1", NOW).delay >= 300 * 0.8  # never sooner than the schedule


def test_retry_after_is_ignored_for_other_statuses() -> None:
    assert policy().decide(1, 500, "3600", NOW).delay <= 6


def test_retry_after_forms() -> None:
    assert retry_after_seconds("30", NOW) == 30
    http_date = (NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_seconds(http_date, NOW) == 90
    assert retry_after_seconds("soon", NOW) is None and retry_after_seconds(None, NOW) is None
    assert retry_after_seconds("999999999", NOW) == 24 * 3600
