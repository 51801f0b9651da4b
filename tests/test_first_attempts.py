"""The log of a live delivery on a real store: its first attempt lives in the delivery's own row, so a change
delivered at the first try adds one row to the store; every later attempt goes to the attempts log, and the
readers (a job's attempts, the integration's figures, the organization's log size, the attempt durations) see
both as one log."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from publisher.store import AttemptRecord, NewDelivery, Store, utcnow

URL = "http://127.0.0.1:9/hook"


def _live(integration: int, n: int) -> NewDelivery:
    return NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", f"docs/{n}", "created",
                       b'{"n": %d}' % n, 0, n)


def _first(new: NewDelivery, status: int | None, *, error: str | None = None) -> AttemptRecord:
    """A live delivery's attempt, as the dispatcher hands it to the recorder."""
    settled = "succeeded" if status == 204 else "pending"
    return AttemptRecord(0, new.integration_id, 1, "scheduled", utcnow(), URL, {"webhook-id": new.webhook_id},
                         status, None if status is None else {"content-type": "text/plain"},
                         b"ok" if status == 204 else None, 4.5, error, settled,
                         None if settled == "succeeded" else utcnow() + timedelta(seconds=30), live=new)


def _rows(database: str) -> tuple[int, int]:
    """Rows in the deliveries table and in the attempts log."""
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM walhook.deliveries), "
                           "(SELECT count(*) FROM walhook.attempts)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_a_delivery_that_succeeds_at_once_writes_one_row(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", URL, ["*"])
        news = [_live(integration, n) for n in range(20)]
        await store.log_first_attempts([_first(new, 204) for new in news])
        assert _rows(database) == (20, 0)
        (delivery, *_) = await store.deliveries(integration, limit=100, event_id="evt_3")
        (attempt,) = await store.attempts_of(delivery.id)
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert (attempt.number, attempt.trigger, attempt.url, attempt.response_status) == (1, "scheduled", URL, 204)
    assert attempt.request_headers == {"webhook-id": f"evt_3_i{integration}"}
    assert attempt.response_headers == {"content-type": "text/plain"} and attempt.response_body == b"ok"
    assert attempt.delivery_id == delivery.id and attempt.duration_ms == 4.5


async def test_later_attempts_follow_the_first_in_the_attempts_log(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", URL, ["*"])
        new = _live(integration, 1)
        await store.log_first_attempts([_first(new, None, error="connection refused")])
        await store.log_first_attempts([_first(new, 204)])  # read again after a crash, sent again
        parked = _live(integration, 2)
        await store.park([parked])  # waited in the store first: its first attempt is a row of the attempts log
        await store.log_first_attempts([_first(parked, 204)])
        (first,) = await store.deliveries(integration, event_id="evt_1")
        (second,) = await store.deliveries(integration, event_id="evt_2")
        attempts = await store.attempts_of(first.id)
        parked_attempts = await store.attempts_of(second.id)
        figures = (await store.integration_figures("acme"))[integration]
    assert [(a.number, a.response_status, a.error) for a in attempts] == [(1, None, "connection refused"),
                                                                          (2, 204, None)]
    assert attempts[0].id < attempts[1].id and first.status == "succeeded" and first.attempts == 2
    assert [(a.number, a.response_status) for a in parked_attempts] == [(1, 204)]
    assert _rows(database) == (2, 2)
    assert figures.last_status == 204 and figures.succeeded == 2


async def test_the_log_size_and_durations_count_first_attempts_kept_in_the_row(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", URL, ["*"])
        before = (await store.usage("acme")).log_bytes_24h
        await store.log_first_attempts([_first(_live(integration, n), 204) for n in range(3)])
        after = (await store.usage("acme")).log_bytes_24h
        buckets, total, sum_ms = await store.attempt_durations([1, 10], timedelta(hours=1), latest=100)
    body_bytes = sum(len(b'{"n": %d}' % n) for n in range(3))
    assert after - before > body_bytes + 3 * len(b"ok")  # headers and response bodies count too
    assert (buckets, total, sum_ms) == ([0, 3], 3, 13.5)
