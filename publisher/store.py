"""walhook's own tables: organizations, their signing secrets, and webhook integrations.

SQLAlchemy 2 (async, psycopg 3) on Postgres, in a schema of its own (``[store] schema``,
default ``walhook``) so it can share the source database without touching the app's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    or_,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema

from publisher.errors import NotFound, StoreError
from publisher.matching import Subscription, parse_subscription
from publisher.signing import generate_secret, secret_key


def _tables(schema: str) -> tuple[MetaData, Table, Table, Table]:
    metadata = MetaData(schema=schema)
    organizations = Table(
        "organizations", metadata,
        Column("id", String(200), primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    secrets = Table(
        "signing_secrets", metadata,
        Column("id", Integer, primary_key=True),
        Column("organization_id", ForeignKey(organizations.c.id, ondelete="CASCADE"), nullable=False, index=True),
        Column("secret", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("expires_at", DateTime(timezone=True)),
    )
    integrations = Table(
        "integrations", metadata,
        Column("id", Integer, primary_key=True),
        Column("organization_id", ForeignKey(organizations.c.id, ondelete="CASCADE"), nullable=False, index=True),
        Column("name", String(200), nullable=False),
        Column("url", Text, nullable=False),
        Column("events", JSON, nullable=False),
        Column("enabled", Boolean, nullable=False, server_default="true"),
        Column("disabled_reason", Text),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return metadata, organizations, secrets, integrations


@dataclass(frozen=True)
class Integration:
    """An enabled webhook integration, with the secrets its deliveries are signed with."""

    id: int
    organization_id: str
    name: str
    url: str
    subscriptions: list[Subscription]
    secrets: list[str]

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "organization": self.organization_id, "name": self.name, "url": self.url,
                "events": [subscription.text for subscription in self.subscriptions]}


class Store:
    """Access to walhook's tables. ``open`` creates the schema if needed; ``close`` is idempotent."""

    def __init__(self, dsn: str, schema: str = "walhook") -> None:
        self._dsn = dsn
        self._schema = schema
        self._metadata, self.organizations, self.secrets, self.integrations = _tables(schema)
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        if self._engine is not None:
            return
        # psycopg parses the DSN itself, so both URL and key=value forms work.
        self._engine = create_async_engine("postgresql+psycopg://", pool_size=5, pool_pre_ping=True,
                                           async_creator=lambda: psycopg.AsyncConnection.connect(self._dsn))
        try:
            async with self._engine.begin() as conn:
                await conn.execute(CreateSchema(self._schema, if_not_exists=True))
                await conn.run_sync(self._metadata.create_all)
        except SQLAlchemyError as exc:
            await self.close()
            raise StoreError(f"cannot prepare the store schema {self._schema!r}: {exc}") from exc

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open")
        return self._engine

    async def add_organization(self, organization_id: str, secret: str | None = None) -> str:
        """Create an organization with a signing secret (generated unless given); returns the secret."""
        secret = secret or generate_secret()
        secret_key(secret)  # refuse a malformed secret before storing it
        async with self.engine.begin() as conn:
            await conn.execute(self.organizations.insert().values(id=organization_id))
            await conn.execute(self.secrets.insert().values(organization_id=organization_id, secret=secret))
        return secret

    async def organization_exists(self, organization_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(self.organizations.c.id).where(self.organizations.c.id == organization_id))
        return found is not None

    async def add_integration(self, organization_id: str, url: str, events: list[str], name: str = "") -> int:
        for text in events:
            parse_subscription(text)  # refuse a bad subscription before storing it
        if not await self.organization_exists(organization_id):
            raise NotFound(f"organization {organization_id!r} does not exist")
        async with self.engine.begin() as conn:
            return int(await conn.scalar(self.integrations.insert().values(
                organization_id=organization_id, url=url, events=events, name=name or url,
            ).returning(self.integrations.c.id)))

    async def active_secrets(self, organization_id: str, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        query = (select(self.secrets.c.secret)
                 .where(self.secrets.c.organization_id == organization_id)
                 .where(or_(self.secrets.c.expires_at.is_(None), self.secrets.c.expires_at > now))
                 .order_by(self.secrets.c.id.desc()))
        async with self.engine.connect() as conn:
            return list((await conn.scalars(query)).all())

    async def integrations_of(self, organization_id: str | None = None) -> list[Integration]:
        """Enabled integrations (of one organization, or all), each with its active secrets."""
        query = select(self.integrations).where(self.integrations.c.enabled).order_by(self.integrations.c.id)
        if organization_id is not None:
            query = query.where(self.integrations.c.organization_id == organization_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        secrets_by_org: dict[str, list[str]] = {}
        for row in rows:
            if row["organization_id"] not in secrets_by_org:
                secrets_by_org[row["organization_id"]] = await self.active_secrets(row["organization_id"])
        return [Integration(row["id"], row["organization_id"], row["name"], row["url"],
                            [parse_subscription(text) for text in row["events"]],
                            secrets_by_org[row["organization_id"]])
                for row in rows]
