"""Which LSN may be confirmed to Postgres: pure bookkeeping, no I/O.

A transaction's end LSN becomes confirmable once it has committed and Kafka has
acknowledged every event it produced, and every earlier transaction is confirmable too.
The confirmed LSN never moves backwards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class TransactionAcks:
    """Events of one transaction still waiting for Kafka, and its end LSN once committed."""

    pending: int = 0
    end_lsn: int | None = None


class AckTracker:
    def __init__(self, confirmed_lsn: int = 0) -> None:
        self.confirmed_lsn = confirmed_lsn
        self._open: deque[TransactionAcks] = deque()

    def begin(self) -> TransactionAcks:
        transaction = TransactionAcks()
        self._open.append(transaction)
        return transaction

    @staticmethod
    def sent(transaction: TransactionAcks) -> None:
        transaction.pending += 1

    def acknowledged(self, transaction: TransactionAcks, events: int = 1) -> None:
        transaction.pending -= events
        self._advance()

    def commit(self, transaction: TransactionAcks, end_lsn: int) -> None:
        transaction.end_lsn = end_lsn
        self._advance()

    def idle_at(self, wal_end: int) -> None:
        """The server has sent everything up to ``wal_end``: confirm it if nothing is in flight."""
        if not self._open:
            self.confirmed_lsn = max(self.confirmed_lsn, wal_end)

    @property
    def in_flight(self) -> int:
        return sum(transaction.pending for transaction in self._open)

    def _advance(self) -> None:
        while self._open and self._open[0].end_lsn is not None and self._open[0].pending == 0:
            end_lsn = self._open.popleft().end_lsn
            self.confirmed_lsn = max(self.confirmed_lsn, end_lsn or 0)
