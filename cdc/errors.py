"""The CDC branch of walhook's exception tree.

::

    WalhookError
    └── CdcError
        ├── ProtocolError        bytes from the server that do not parse
        ├── SourceError          the source database refused or is misconfigured
        │   └── SlotBusyError    another process streams from the slot
        ├── ReplicationLost      the replication connection dropped (retriable)
        ├── MappingError         a row cannot become an event (names the table and column)
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


class ReplicationLost(CdcError):
    """The replication connection ended; reconnecting resumes from the slot."""

    retriable = True


class MappingError(CdcError):
    """A row change could not be turned into an event."""


class KafkaWriteError(CdcError):
    """Kafka refused or failed to acknowledge an event."""
