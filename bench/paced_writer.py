"""A writer that commits single-row INSERT transactions at a fixed rate, on an absolute schedule.

Row ``i`` of a run is due at ``start + i / rate``: a late row is sent as soon as possible and
the rows after it keep their own times, so lateness never accumulates (no drift). The
schedule is split over ``connections`` worker processes (row ``i`` goes to worker
``i % connections``); separate processes keep the writer's CPU and timing away from the
receiver's event loop in the benchmark process.

Each worker drives one libpq connection in pipeline mode: every row is sent as its own
prepared INSERT followed by a Sync, which ends the implicit transaction - so each row is
one committed transaction - without waiting for the previous row's round trip. The commit
time recorded for a row is the wall-clock time at which its Sync result (ReadyForQuery,
i.e. the commit) came back. One Python process can thus sustain thousands of commits per
second with little CPU, which a blocking execute per row cannot on a busy 2-core machine.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import time
from collections import deque
from multiprocessing.pool import Pool
from types import TracebackType
from typing import Any

from psycopg import pq

INSERT = ("INSERT INTO {table} (id, org, name, amount, note) "
          "VALUES ($1::bigint, 'acme', 'row ' || $1::bigint, $1::bigint * 1.5, 'paced')")
# Every fifth transaction updates the row written UPDATE_BACK transactions before it (an insert of the
# same worker, already committed) instead: its note names the transaction, which is how the receiver
# tells the update's webhook from the insert's.
UPDATE = "UPDATE {table} SET note = 'u' || $1::bigint, amount = amount + 1 WHERE id = $1::bigint - 2"
UPDATE_EVERY = 5


def is_update(index: int) -> bool:
    """Whether transaction ``index`` of a run (0-based) is an update; a fifth of them are."""
    return index % UPDATE_EVERY == UPDATE_EVERY - 1


class PacedWriter:
    """A pool of writer processes, started once and reused for every rate of a run."""

    def __init__(self, dsn: str, table: str, connections: int = 2) -> None:
        self._dsn = dsn
        self._table = table
        self._connections = connections
        self._pool: Pool | None = None
        self.pids: list[int] = []

    def __enter__(self) -> PacedWriter:
        # spawn, not fork: the benchmark process runs an event loop and threads.
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self._connections)
        self._pool = context.Pool(self._connections, initializer=_keep, initargs=(barrier,))
        # Wait until every worker has started and imported what it needs, so the first rate starts on time.
        self.pids = self._pool.map(_ready, range(self._connections), chunksize=1)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def run(self, rate: float, seconds: float, first_id: int, lead: float = 0.5) -> tuple[float, dict[int, float]]:
        """Write ``rate * seconds`` rows with ids from ``first_id``; returns (schedule start, commit time per id).

        Blocking: call it from a thread when an event loop must keep running.
        """
        assert self._pool is not None, "use PacedWriter as a context manager"
        count = round(rate * seconds)
        start = time.time() + lead  # the lead lets every worker connect before its first row is due
        jobs = [(self._dsn, self._table, first_id, count, self._connections, worker, rate, start)
                for worker in range(self._connections)]
        committed: dict[int, float] = {}
        for part in self._pool.starmap(write_share, jobs):
            committed.update(part)
        return start, committed


_barrier: Any = None  # a worker process's copy of the pool's start barrier


def _keep(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def _ready(_: int) -> int:
    _barrier.wait(60)  # a worker waiting here takes no other task: every worker answers once
    return os.getpid()


def write_share(dsn: str, table: str, first_id: int, count: int, stride: int, worker: int, rate: float,
                start: float) -> list[tuple[int, float]]:
    """Commit this worker's rows (``worker``, ``worker + stride``, ...) on schedule; (id, commit time) each."""
    conn = _connect(dsn, table)
    try:
        return _pipeline(conn, [(start + i / rate, first_id + i, is_update(i)) for i in range(worker, count, stride)])
    finally:
        conn.finish()


def _connect(dsn: str, table: str) -> pq.abc.PGconn:
    conn = pq.PGconn.connect(dsn.encode())
    if conn.status != pq.ConnStatus.OK:
        raise RuntimeError(f"cannot connect: {conn.get_error_message()}")
    _check(conn.prepare(b"paced_insert", INSERT.format(table=table).encode()))
    _check(conn.prepare(b"paced_update", UPDATE.format(table=table).encode()))
    conn.enter_pipeline_mode()
    conn.nonblocking = 1
    return conn


def _pipeline(conn: pq.abc.PGconn, schedule: list[tuple[float, int, bool]]) -> list[tuple[int, float]]:
    """Send each row when it is due, read commits as they come back, until every row is committed."""
    committed: list[tuple[int, float]] = []
    pending: deque[int] = deque()
    position = 0
    while position < len(schedule) or pending:
        while position < len(schedule) and schedule[position][0] <= time.time():
            _, row_id, update = schedule[position]
            conn.send_query_prepared(b"paced_update" if update else b"paced_insert", [str(row_id).encode()])
            conn.pipeline_sync()
            pending.append(row_id)
            position += 1
        _flush(conn)
        next_due = schedule[position][0] if position < len(schedule) else time.time() + 1.0
        _wait_for_commits(conn, pending, committed, max(0.0, next_due - time.time()))
    return committed


def _wait_for_commits(conn: pq.abc.PGconn, pending: deque[int], committed: list[tuple[int, float]],
                      timeout: float) -> None:
    """Wait up to ``timeout`` for the server; note the time of every commit that came back."""
    if not pending:
        time.sleep(timeout)
        return
    readable, _, _ = select.select([conn.socket], [], [], timeout)
    if not readable:
        return
    conn.consume_input()
    ended = False
    while pending and not conn.is_busy():
        result = conn.get_result()
        if result is None:  # the end of one statement's results; two in a row: nothing more yet
            if ended:
                return
            ended = True
            continue
        ended = False
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            committed.append((pending.popleft(), time.time()))
        else:
            _check(result)


def _flush(conn: pq.abc.PGconn) -> None:
    while conn.flush() == 1:
        select.select([], [conn.socket], [], 1.0)


def _check(result: pq.abc.PGresult) -> None:
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise RuntimeError(f"insert failed: {result.get_error_message()}")
