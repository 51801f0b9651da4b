"""The CDC branch of walhook's exception tree.

::

    WalhookError
    └── CdcError
        ├── ProtocolError        bytes from the server that do not parse
        ├── SourceError          the source database refused or is misconfigured
        │   ├── SlotBusyError    another process streams from the slot
        │   ├── SlotInvalidated  Postgres gave the slot up (max_slot_wal_keep_size)
        │   └── SlotLost         the slot walhook streamed from is gone, or the server is another cluster
        ├── PositionUnknown      the store that remembers where capture streamed cannot be read
        ├── ReplicationLost      the replication connection dropped (retriable)
        ├── MappingError         a row cannot become an event (names the table and column)
        ├── BackfillRefused      a backfill that cannot run (no key, a bad filter); names why
        └── KafkaWriteError      Kafka did not acknowledge an event
"""

from models.errors import WalhookError


class CdcError(WalhookError):
    """Base of every error of the capture half."""


class ProtocolError(CdcError):
    """The replication stream carried bytes that do not decode."""


class SourceError(CdcError):
    """The source database is not set up for capture; the message says what to change."""


class SlotBusyError(SourceError):
    """The replication slot is active for another process."""


class SlotInvalidated(SourceError):
    """Postgres invalidated the slot: it held back more WAL than ``max_slot_wal_keep_size`` allows."""

    def __init__(self, slot: str, detail: str = "") -> None:
        super().__init__(
            f"replication slot {slot!r} was invalidated by Postgres: it held back more WAL than "
            "max_slot_wal_keep_size allows, and the changes since its last confirmed position are gone. "
            f"Drop it (SELECT pg_drop_replication_slot('{slot}')) and start walhook once with "
            "`walhook cdc --accept-lost-changes` to capture from now on; re-sync receivers for the gap from the "
            "tables themselves" + (f" ({detail})" if detail else ""))


class SlotLost(SourceError):
    """The slot walhook remembers streaming from is missing, or the server is not the cluster it streamed from.

    Creating a new slot would silently skip every change committed since the remembered position.
    """


class PositionUnknown(CdcError):
    """Where capture streamed before cannot be read from the store (retried while the slot is missing)."""

    retriable = True


class ReplicationLost(CdcError):
    """The replication connection ended; reconnecting resumes from the slot."""

    retriable = True


class MappingError(CdcError):
    """A row change could not be turned into an event."""


class KafkaWriteError(CdcError):
    """Kafka refused or failed to acknowledge an event."""


class BackfillRefused(CdcError):
    """A backfill that cannot run as asked: the table has no key to read it by, or the filter is wrong."""
