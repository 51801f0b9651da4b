"""Job rows that capture and the control plane share: a backfill is asked for through the API, portal or CLI
and run by the capture that streams its table, both through the store's ``backfills`` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Backfill:
    """A backfill: the existing rows of one captured table, read while the stream runs, as ``read`` events.

    ``organization_id`` None: every organization's rows; ``integration_id`` None: for every integration
    that subscribes to ``KEY:read``. ``cursor`` is the key (text values) of the last row whose chunk
    Kafka acknowledged; the next chunk starts after it.
    """

    id: int
    table_name: str
    organization_id: str | None
    integration_id: int | None
    filter: str | None
    state: str  # running, paused, cancelled, failed or done
    key_columns: list[str] | None
    cursor: list[str] | None
    rows_estimated: int | None
    rows_read: int
    rows_published: int
    rows_superseded: int  # read, then left out because the stream changed the row meanwhile
    chunks: int
    chunk_rows: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in ("cancelled", "failed", "done")

    @property
    def percent(self) -> float | None:
        """How far it got, from the estimate (None before the estimate); 100 once done."""
        if self.state == "done":
            return 100.0
        if not self.rows_estimated:
            return None
        return min(99.9, 100.0 * self.rows_read / self.rows_estimated)
