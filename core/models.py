"""The store's tables (SQLModel). Alembic migrations in ``core/migrations`` are made from this metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, timezone-aware, for every timestamp the store writes."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every database: SQLite drops the offset, so it is put back as UTC.

    Without it the API answered SQLite rows with naive times (not RFC 3339) and PostgreSQL rows with
    aware ones, and comparing either with :func:`utcnow` depended on the store.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _timestamp(*, nullable: bool = False) -> Any:
    column: Column[datetime] = Column(UtcDateTime(), nullable=nullable)
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
    """Webhook signing secrets, newest first: ``{value, hint, created_at, expires_at}``, two during a
    rotation; ``value`` is sealed (``core/sealing.py``), ``hint`` the last characters the API shows."""
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
    expires_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False, index=True))


class Connector(SQLModel, table=True):
    """A named connection to a SQL database or an HTTP API; its credentials live only here, sealed."""

    __tablename__ = "connectors"

    name: str = Field(primary_key=True, max_length=63)
    type: str = Field(max_length=16)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The configuration as the API shows it, every credential masked (``core.connectors.masked_config``)."""
    sealed_config: str = Field(sa_column=Column(Text, nullable=False))
    """The whole configuration as JSON, sealed (``core/sealing.py``); only the worker's steps open it."""
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class StageRun(SQLModel, table=True):
    """One attempt of a pipeline stage on one item, written by the stage worker when the attempt ends.

    The pipeline metrics (processed, failed, durations) are counted from these; an attempt whose worker
    died writes nothing, and its retry writes the row.
    """

    __tablename__ = "stage_runs"

    id: int | None = Field(default=None, primary_key=True)
    pipeline: str = Field(index=True, max_length=63)
    stage: str = Field(max_length=63)
    execution_id: str = Field(index=True, max_length=255)
    step_id: str = Field(max_length=200)
    attempt: int
    worker: str = Field(default="", max_length=255)
    started_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    finished_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    duration_ms: float
    outcome: str = Field(max_length=16)
    error: str | None = Field(default=None, max_length=2000)


class StoredLifecycle(SQLModel, table=True):
    """A custom lifecycle defined through the API (the built-in ones live in code)."""

    __tablename__ = "lifecycles"

    type: str = Field(primary_key=True, max_length=63)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_by: str = Field(default="", max_length=200)
    created_at: datetime = _timestamp()


class SlaConfig(SQLModel, table=True):
    """An SLA target for an entity type (and task type); entities created later take the newest match."""

    __tablename__ = "sla_configs"

    id: str = Field(primary_key=True, max_length=32)
    entity_type: str = Field(index=True, max_length=63)
    task_type: str | None = Field(default=None, max_length=63)
    target_minutes: float
    start_on: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    stop_on: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    pause_on: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True
    created_at: datetime = _timestamp()


class SlaRecord(SQLModel, table=True):
    """One SLA tracking period of one entity: target and actual minutes, and whether it was breached."""

    __tablename__ = "sla_records"

    id: str = Field(primary_key=True, max_length=255)
    entity_type: str = Field(max_length=63)
    entity_id: str = Field(index=True, max_length=128)
    task_type: str | None = Field(default=None, max_length=63)
    sla_config_id: str | None = Field(default=None, max_length=32)
    target_minutes: float
    actual_minutes: float | None = None
    breached: bool = False
    started_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    completed_at: datetime | None = _timestamp(nullable=True)
    breached_at: datetime | None = _timestamp(nullable=True)
    created_at: datetime = _timestamp()


class StoredAutomation(SQLModel, table=True):
    """An automation rule defined through the API: on an event, a predicate, then actions."""

    __tablename__ = "automations"

    id: str = Field(primary_key=True, max_length=63)
    entity_type: str | None = Field(default=None, max_length=63)
    event: str = Field(max_length=63)
    predicate: str | None = None
    actions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    description: str = ""
    active: bool = True
    created_at: datetime = _timestamp()


class ProcessedDocument(SQLModel, table=True):
    """A document the example document pipeline has processed (examples/pipelines/documents.py).

    One row per execution, so a retried PROCESSING stage updates its row instead of adding one; the
    duplicate-invoice rule looks up earlier rows by ``invoice_number``.
    """

    __tablename__ = "documents"

    id: int | None = Field(default=None, primary_key=True)
    pipeline: str = Field(max_length=63)
    execution_id: str = Field(max_length=255, unique=True)
    filename: str | None = Field(default=None, max_length=255)
    document_class: str = Field(max_length=32)
    invoice_number: str | None = Field(default=None, index=True, max_length=128)
    total: float | None = None
    currency: str | None = Field(default=None, max_length=8)
    fields: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    created_at: datetime = _timestamp()


class IndexedProduct(SQLModel, table=True):
    """A product the example product pipeline has indexed; searched through SQLite FTS5 or PostgreSQL
    full-text (see examples/pipelines/products.py and migration 0006)."""

    __tablename__ = "indexed_products"

    sku: str = Field(primary_key=True, max_length=128)
    execution_id: str = Field(max_length=255)
    title: str = Field(max_length=500)
    description: str = ""
    category: str | None = Field(default=None, max_length=128)
    keywords: str = ""
    """Space-separated, as the search reads them."""
    price: float | None = None
    currency: str | None = Field(default=None, max_length=8)
    score: float = 0.0
    record: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The channel record DATA_MAPPING produced."""
    updated_at: datetime = _timestamp()
