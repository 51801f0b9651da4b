"""The change event: what Kafka carries and what a webhook body contains.

The JSON shape is the entity-event payload users already know (eventTimestamp,
operationType, entityPath, entityId, entityKey, collectionPath, organizationId,
data{value, oldValue, updateMask}), in that order, followed by two fields walhook adds so
receivers can deduplicate and order:

* ``eventId`` - derived from (commit LSN, index within the transaction): reading the same
  change twice gives the same id. (A move to another organization is two events of one
  change; the second id carries ``MOVED_SUFFIX``.)
* ``transaction`` - ``{"id": xid, "commitLsn": "X/Y", "index": n}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

OperationType = Literal["created", "updated", "deleted", "truncated", "read"]


def camel_case(name: str) -> str:
    """``soft_removed_at`` -> ``softRemovedAt`` (the ``camel_case`` property-name style)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def iso_utc(unix_us: int) -> str:
    """Microseconds since the Unix epoch -> ``2024-05-01T12:00:00.123456Z``."""
    moment = datetime.fromtimestamp(unix_us // 1_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{unix_us % 1_000_000:06d}Z"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC. ``ValueError`` when unreadable."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time: {text[:40]!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_id_prefix(commit_lsn: int) -> str:
    """What every event id of the transaction committed at ``commit_lsn`` starts with."""
    return f"evt_{commit_lsn:016X}_"


def read_event_id(mark_lsn: int, backfill_id: int, index: int) -> str:
    """The id of a backfill's ``index``-th row emitted at the high mark committed at ``mark_lsn``:
    stable per (backfill, row, position); a chunk read again after a restart has a new mark, so new ids."""
    return f"{event_id_prefix(mark_lsn)}r{backfill_id}_{index:06d}"


def make_event_id(commit_lsn: int, index: int) -> str:
    """A stable id for the ``index``-th change of the transaction committed at ``commit_lsn``."""
    return f"{event_id_prefix(commit_lsn)}{index:06d}"


MOVED_SUFFIX = "_moved"
"""A row moved to another organization is two events of one change: the ``deleted`` one, to the
old organization, has the change's id; the ``created`` one, to the new organization, has the
change's id + this suffix. Both are as stable as the change's id."""


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class EntityState(_Model):
    """One side of a change: the entity before or after it."""

    key: str
    properties: dict[str, Any]
    create_time: str | None = Field(default=None, alias="createTime")
    update_time: str | None = Field(default=None, alias="updateTime")


class ChangeData(_Model):
    value: EntityState | None
    old_value: EntityState | None = Field(default=None, alias="oldValue")
    update_mask: list[str] | None = Field(default=None, alias="updateMask")


class TransactionInfo(_Model):
    id: int
    commit_lsn: str = Field(alias="commitLsn")
    index: int


class ChangeEvent(_Model):
    """A committed row change, as an entity event.

    The capture side builds the same shape as plain dicts on its hot path
    (``cdc.entities``); tests validate that output against this model, so the two
    cannot drift apart.
    """

    event_timestamp: str = Field(alias="eventTimestamp")
    operation_type: OperationType = Field(alias="operationType")
    entity_path: str = Field(alias="entityPath")
    entity_id: str = Field(alias="entityId")
    entity_key: str = Field(alias="entityKey")
    collection_path: str = Field(alias="collectionPath")
    organization_id: str | None = Field(alias="organizationId")
    data: ChangeData
    event_id: str = Field(alias="eventId")
    transaction: TransactionInfo

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(by_alias=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ChangeEvent:
        return cls.model_validate_json(raw)

