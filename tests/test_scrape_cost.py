"""What a metrics scrape reads of the store, on a real store: a bounded amount whatever the log's size. The
backlog is counted exactly, failed deliveries exactly up to a bound and estimated beyond it, succeeded ones
estimated from Postgres's statistics; the attempt-duration histogram counts the newest attempts of the hour, at
most ``LATENCY_ATTEMPTS`` of them."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from control.api import metrics
from publisher.store import AttemptRecord, NewDelivery, Store, reports, utcnow

URL = "http://127.0.0.1:9/hook"
OUTCOMES = ["succeeded"] * 30 + ["failed"] * 4 + ["pending"] * 5


def _attempt(integration: int, n: int, outcome: str, started_at: datetime | None = None,
             duration_ms: float = 3.0) -> AttemptRecord:
    """A live delivery's first attempt that left it ``outcome`` (succeeded, failed for good, or pending)."""
    new = NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", f"docs/{n}",
                      "created", b"{}", 0, n)
    retry = utcnow() + timedelta(minutes=5) if outcome == "pending" else None
    return AttemptRecord(0, integration, 1, "scheduled", started_at or utcnow(), URL, {},
                         204 if outcome == "succeeded" else 500, {}, b"", duration_ms,
                         None if outcome == "succeeded" else "HTTP 500", outcome, retry, live=new)


def _analyze(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ANALYZE walhook.deliveries")


async def _store_with_deliveries(store: Store) -> None:
    await store.add_organization("acme")
    integration = await store.add_integration("acme", URL, ["*"])
    await store.log_first_attempts([_attempt(integration, n, outcome) for n, outcome in enumerate(OUTCOMES)])


async def test_the_backlog_and_failures_are_exact_and_successes_an_estimate(database: str) -> None:
    async with Store(database) as store:
        await _store_with_deliveries(store)
        unanalyzed = await store.delivery_counts()
        _analyze(database)
        analyzed = await store.delivery_counts()
    # Before the table's first ANALYZE the statistics know no rows: the estimate is 0, never below.
    assert unanalyzed == {"pending": 5, "failed": 4, "succeeded": 0}
    # ANALYZE read the whole (small) table: the estimate is the count.
    assert analyzed == {"pending": 5, "failed": 4, "succeeded": 30}


async def test_failed_deliveries_beyond_the_bound_are_the_statistics_estimate(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "FAILED_COUNTED_UP_TO", 3)
    async with Store(database) as store:
        await _store_with_deliveries(store)
        bounded = await store.delivery_counts()
        _analyze(database)
        estimated = await store.delivery_counts()
    assert bounded["failed"] == 3  # counted up to the bound; the empty index's statistics say 0: the bound stands
    assert estimated == {"pending": 5, "failed": 4, "succeeded": 30}


async def test_the_histogram_counts_the_newest_attempts_of_the_hour(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", URL, ["*"])
        now = utcnow()
        # Attempt n started n minutes ago and took n ms; the odd ones waited in the store first, so their
        # attempt is a row of the attempts log, the even ones' stays in their delivery's row.
        records = [_attempt(integration, n, "succeeded", now - timedelta(minutes=n), float(n)) for n in range(1, 8)]
        await store.park([r.live for n, r in enumerate(records, 1) if r.live is not None and n % 2])
        await store.log_first_attempts(records)
        await store.log_first_attempts([_attempt(integration, 90, "succeeded", now - timedelta(minutes=90), 0.5)])
        everything = await store.attempt_durations([1, 5], timedelta(hours=1), latest=100)
        newest = await store.attempt_durations([1, 5], timedelta(hours=1), latest=4)
        monkeypatch.setattr(metrics, "LATENCY_ATTEMPTS", 2)
        exposition = (await metrics.api_metrics(store, None)).decode()
    assert everything == ([1, 5], 7, 28.0)  # the attempt of 90 minutes ago is outside the window
    assert newest == ([1, 4], 4, 10.0)  # attempts 1 to 4, from both halves of the log
    assert 'walhook_attempt_duration_seconds_bucket{le="+Inf"} 2.0\n' in exposition
    assert "walhook_attempt_duration_seconds_gsum 0.003\n" in exposition
    assert "# HELP walhook_attempt_duration_seconds Durations of the latest 2 attempts of the last hour" in exposition
