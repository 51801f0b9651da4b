"""What the capture's ``/readyz`` checks: the slot streams, the Kafka writer is connected (and, with a
``[store]`` for backfills, the store answers).

The pipeline tells the checks when a session starts streaming and when it ends; the store is probed
with a short timeout at each reading (``models.health``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from models.health import Check, Probe, Readiness


class CaptureChecks:
    """The capture's readiness, kept up to date by its sessions."""

    def __init__(self) -> None:
        self.slot = Check("slot", "not streaming yet")
        self.kafka = Check("kafka", "not connected yet")
        self.readiness = Readiness(self.slot, self.kafka)

    def streaming(self) -> None:
        """A session streams from the slot into the open Kafka writer."""
        self.slot.passing()
        self.kafka.passing()

    def interrupted(self, reason: str) -> None:
        """The session ended (``reason``): nothing streams, and its writer is closed until the next one."""
        self.slot.failing(reason)
        self.kafka.failing("the writer closed with the stream; it reopens when the stream resumes")

    def watch_store(self, ping: Callable[[], Awaitable[object]]) -> None:
        """The backfills' store: ``ping`` is asked at each reading."""
        self.readiness.add(Probe("store", ping))
