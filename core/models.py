"""The store's tables (SQLModel). Alembic migrations in ``core/migrations`` are made from this metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, timezone-aware, for every timestamp the store writes."""
    return datetime.now(UTC)


def _timestamp(*, nullable: bool = False) -> Any:
    column = Column(DateTime(timezone=True), nullable=nullable)
    if nullable:
        return Field(default=None, sa_column=column)
    return Field(default_factory=utcnow, sa_column=column)


class Definition(SQLModel, table=True):
    """One named definition; its versions are immutable rows of :class:`DefinitionVersion`."""

    __tablename__ = "definitions"

    name: str = Field(primary_key=True, max_length=63)
    description: str | None = None
    active_version: int | None = None
    latest_version: int = 0
    archived: bool = False
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class DefinitionVersion(SQLModel, table=True):
    """An immutable version of a definition document."""

    __tablename__ = "definition_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_definition_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(foreign_key="definitions.name", index=True, max_length=63)
    version: int
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(max_length=64)
    created_at: datetime = _timestamp()
    published_at: datetime | None = _timestamp(nullable=True)


class ApiKey(SQLModel, table=True):
    """An API key: only a hash of its secret part is kept."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=16)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = _timestamp(nullable=True)


class ExecutionRecord(SQLModel, table=True):
    """One row per started execution: the idempotency record that outlives Temporal's retention."""

    __tablename__ = "executions"

    workflow_id: str = Field(primary_key=True, max_length=255)
    run_id: str | None = Field(default=None, max_length=64)
    definition: str = Field(index=True, max_length=63)
    version: int
    trigger: str = Field(default="api", max_length=32)
    created_at: datetime = _timestamp()


class Trigger(SQLModel, table=True):
    """A way an execution starts from outside: a signed webhook, a Temporal Schedule, or an event."""

    __tablename__ = "triggers"

    id: str = Field(primary_key=True, max_length=32)
    definition: str = Field(foreign_key="definitions.name", index=True, max_length=63)
    type: str = Field(max_length=16)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    secrets: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Webhook signing secrets, newest first: ``{value, created_at, expires_at}``; two during a rotation."""
    paused: bool = False
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Delivery(SQLModel, table=True):
    """One accepted webhook delivery: the dedupe record mapping a delivery id to its execution."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("trigger_id", "delivery_id", name="uq_delivery"),)

    id: int | None = Field(default=None, primary_key=True)
    trigger_id: str = Field(max_length=32)
    delivery_id: str = Field(max_length=200)
    execution_id: str = Field(max_length=255)
    created_at: datetime = _timestamp()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class Connector(SQLModel, table=True):
    """A named connection to a SQL database or an HTTP API; its credentials live only here."""

    __tablename__ = "connectors"

    name: str = Field(primary_key=True, max_length=63)
    type: str = Field(max_length=16)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
