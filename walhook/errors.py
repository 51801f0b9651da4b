"""Errors of the shell: configuration and the local stack."""

from models.errors import WalhookError


class StackError(WalhookError):
    """A local server (Postgres or the Kafka broker) could not be started or reached."""
