"""The delivery branch of walhook's exception tree.

::

    WalhookError
    ├── StoreError             (models.errors) the store, shared by every half
    ├── SecretError            (models.errors) a signing secret or a key of the keyring is malformed
    └── PublisherError
        ├── SubscriptionError  an event subscription does not parse
        ├── HttpError          an answer that is not HTTP/1.1, or a request that cannot be written
        ├── JobRefused         a replay job's input cannot run (the message names the field)
        ├── Throttled          an organization's manual actions are past their limits (retry later)
        └── NotAnEvent         a Kafka record is not a walhook event (it goes to the dead-letter topic)
"""

from models.errors import WalhookError


class PublisherError(WalhookError):
    """Base of every error of the delivery half."""


class SubscriptionError(PublisherError):
    """An event subscription such as ``flows/comments:created,updated`` does not parse."""


class HttpError(PublisherError):
    """A receiver's answer does not parse as HTTP/1.1, or a request header cannot be written as is."""


class JobRefused(PublisherError):
    """A replay job was asked for with an input it could never run; the message names the field."""


class Throttled(PublisherError):
    """An organization's manual actions are past a limit; ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAnEvent(PublisherError):
    """A record of the events topic is not a walhook event; the message is the reason, for its dead letter."""
