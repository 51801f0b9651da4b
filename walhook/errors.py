"""Errors of the shell: configuration and the local stack."""

from models.errors import WalhookError


class ConfigError(WalhookError):
    """The configuration is invalid; the message names the file and the bad key."""


class StackError(WalhookError):
    """A local server (Postgres or the Kafka broker) could not be started or reached."""
