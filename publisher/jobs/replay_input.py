"""What a replay may start from: one check shared by the API, the portal and the CLI.

A replay starts at an offset (in every partition) or at a moment (Kafka's ``offsets_for_times``).
Kafka timestamps are milliseconds since 1970 in a signed 64-bit field, and its clients refuse a
negative one, so a moment before 1970 could never run: it is refused here, when the job is asked
for, with the field named, instead of failing in the publisher that claims it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from publisher.errors import JobRefused

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_OFFSET = 2**63 - 1


def replay_start(offset: int | None, since: datetime | None) -> tuple[int | None, datetime | None]:
    """``(offset, since)`` checked, ``since`` made timezone-aware (UTC when it had no offset).

    Raises ``JobRefused`` naming the field: neither or both given, a negative or too large offset,
    a moment before 1970-01-01T00:00:00Z.
    """
    if (offset is None) == (since is None):
        raise JobRefused("give either offset or since, not both and not neither")
    if offset is not None and not 0 <= offset <= MAX_OFFSET:
        raise JobRefused(f"offset: must be between 0 and {MAX_OFFSET}, not {offset}")
    if since is None:
        return offset, None
    moment = since if since.tzinfo else since.replace(tzinfo=UTC)
    if moment < EPOCH:
        raise JobRefused(f"since: Kafka keeps no record before 1970-01-01T00:00:00Z, not {moment.isoformat()}")
    return None, moment

