"""``database_query``: one parameterised SQL statement on a named connector.

The connector (URL with its credentials, ``allow_writes``) is read from the store and opened when the step
runs, so credentials never enter a definition or a workflow history; its credentials are masked in whatever
the step returns, raises or logs (``activities/_masking.py``). Statements are parsed before they run: exactly
one statement, SELECT / INSERT / UPDATE / DELETE only, and a write on a read-only connector is refused
(``ConnectorReadOnly``); read-only connectors also run inside a read-only transaction (PostgreSQL) or with
``PRAGMA query_only`` (SQLite), so a write the parser missed still fails.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._masking import mask_in_this_run
from activities._retry import jittered_delay
from core.connectors import HttpConnectorConfig, SqlConnectorConfig, credentials, mask_url, open_config
from core.connectors import parse_config as parse_connector_config
from core.errors import Unprocessable
from core.models import Connector
from core.sealing import SealedValueUnreadable, Sealer
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.sql import SqlRefused, StatementKind
from workflows.sql import statement_kind as sql_statement_kind
from workflows.steps import DatabaseQueryConfig, parse_config

_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ResolvedConnector:
    """A connector as a step sees it: name, type and its parsed configuration."""

    name: str
    type: str
    config: SqlConnectorConfig | HttpConnectorConfig


class ConnectorLookup:
    """Reads connectors from the store and opens their sealed configurations; the worker only reads."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], sealer: Sealer) -> None:
        self._sessions = sessions
        self._sealer = sealer

    async def get(self, name: str, request: StepRequest, *, expected: str | None = None) -> ResolvedConnector:
        """The connector called ``name``, its credentials masked from now on in what this run emits; a missing
        one, or one of the wrong type, fails without retry; one that does not open here is retried."""
        try:
            async with self._sessions() as session:
                row = await session.get(Connector, name)
        except (SQLAlchemyError, OSError) as exc:
            raise ApplicationError(
                f"the connector store cannot be read: {_first_line(exc)}",
                type=errors.DATABASE_UNAVAILABLE,
                next_retry_delay=jittered_delay(request),
            ) from None
        if row is None:
            raise ApplicationError(
                f"no connector named {name!r}; create it with POST /api/v1/connectors",
                {"connector": name},
                type=errors.CONNECTOR_NOT_FOUND,
                non_retryable=True,
            )
        if expected is not None and row.type != expected:
            raise ApplicationError(
                f"connector {name!r} is a {row.type} connector; this step needs a {expected} one",
                {"connector": name, "type": row.type},
                type=errors.CONNECTOR_NOT_FOUND,
                non_retryable=True,
            )
        try:
            values = open_config(self._sealer, row)
        except SealedValueUnreadable as exc:
            # A worker started without the key the row is sealed with: one restarted with it succeeds.
            raise ApplicationError(
                exc.message,
                {"connector": name, **exc.details},
                type=errors.SECRET_UNREADABLE,
                next_retry_delay=jittered_delay(request),
            ) from None
        try:
            config = parse_connector_config(row.type, values)
        except Unprocessable as exc:
            raise ApplicationError(
                f"connector {name!r} is not valid: {exc.details.get('problems')}",
                type=errors.CONFIG_INVALID,
                non_retryable=True,
            ) from None
        mask_in_this_run(credentials(config))
        return ResolvedConnector(name=row.name, type=row.type, config=config)


class SqlEngines:
    """One engine (and pool) per connector, replaced when the connector's URL or write mode changes."""

    def __init__(self) -> None:
        self._engines: dict[str, tuple[str, bool, AsyncEngine]] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str, config: SqlConnectorConfig) -> AsyncEngine:
        """The cached engine of connector ``name``."""
        async with self._lock:
            cached = self._engines.get(name)
            if cached is not None and cached[:2] == (config.url, config.allow_writes):
                return cached[2]
            engine = _new_engine(config)
            self._engines[name] = (config.url, config.allow_writes, engine)
        if cached is not None:
            await cached[2].dispose()
        return engine

    async def dispose(self) -> None:
        """Close every pool (worker shutdown)."""
        async with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for _url, _writes, engine in engines:
            await engine.dispose()


def _new_engine(config: SqlConnectorConfig) -> AsyncEngine:
    url = make_url(config.url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": _CONNECT_TIMEOUT_S})
        if not config.allow_writes:

            @event.listens_for(engine.sync_engine, "connect")
            def _query_only(dbapi_connection: Any, _record: object) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA query_only = ON")
                cursor.close()

        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"timeout": _CONNECT_TIMEOUT_S},
    )


class DatabaseActivities:
    """SQL step activities: connectors come from the store, engines are cached per connector."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, sealer: Sealer
    ) -> None:
        self.connectors = ConnectorLookup(sessions, sealer)
        self.engines = SqlEngines()
        self._settings = settings

    async def close(self) -> None:
        """Dispose of every connector's pool."""
        await self.engines.dispose()

    @activity.defn(name="database_query")
    async def database_query(self, request: StepRequest) -> StepOutcome:
        """Run the statement: a select answers ``{rows, row_count, truncated}``, a write ``{row_count}``."""
        config = _config(request.config)
        connector = await self.connectors.get(config.connector, request, expected="sql")
        assert isinstance(connector.config, SqlConnectorConfig)
        kind = statement_kind(config.sql, connector.config)
        if kind == "write" and not connector.config.allow_writes:
            raise ApplicationError(
                f"connector {connector.name!r} is read-only: create it with allow_writes to run "
                "INSERT, UPDATE or DELETE",
                {"connector": connector.name},
                type=errors.CONNECTOR_READ_ONLY,
                non_retryable=True,
            )
        params = _mapping(config.params, "params")
        each = None
        if config.params_each is not None:
            if not isinstance(config.params_each, list):
                raise _config_error("with.params_each: expected a list of objects")
            each = [
                {**params, **_mapping(item, f"params_each[{i}]")} for i, item in enumerate(config.params_each)
            ]
        engine = await self.engines.get(connector.name, connector.config)
        output = await run_statement(
            engine,
            connector.config,
            sql=config.sql,
            kind=kind,
            params=params,
            params_each=each,
            max_rows=config.max_rows,
            request=request,
        )
        count = output["row_count"]
        line = f"{'read' if kind == 'read' else 'wrote'} {count} row(s) on connector {connector.name}"
        return StepOutcome(
            output=output,
            attempt=activity.info().attempt,
            logs=[{"level": "info", "message": line, "metadata": {"connector": connector.name}}],
        )


def statement_kind(sql: str, connector: SqlConnectorConfig) -> StatementKind:
    """Whether ``sql`` reads or writes; anything but one SELECT / INSERT / UPDATE / DELETE is refused."""
    dialect = "sqlite" if make_url(connector.url).get_backend_name() == "sqlite" else "postgres"
    try:
        return sql_statement_kind(sql, dialect)
    except SqlRefused as exc:
        raise ApplicationError(str(exc), type=errors.SQL_ERROR, non_retryable=True) from None


async def run_statement(
    engine: AsyncEngine,
    connector: SqlConnectorConfig,
    *,
    sql: str,
    kind: StatementKind,
    params: dict[str, Any],
    params_each: list[dict[str, Any]] | None,
    max_rows: int,
    request: StepRequest,
) -> dict[str, Any]:
    """Run one statement and shape its result as JSON data; errors classified for Temporal's retries."""
    if params_each is not None and not params_each:
        return {"row_count": 0}
    try:
        connection = await engine.connect()
    except Exception as exc:
        raise ApplicationError(
            f"cannot connect to the database: {_clean(exc, connector)}",
            type=errors.DATABASE_UNAVAILABLE,
            next_retry_delay=jittered_delay(request),
        ) from None
    try:
        return await _execute(connection, connector, text(sql), kind, params, params_each, max_rows)
    except DBAPIError as exc:
        if exc.connection_invalidated or "database is locked" in str(exc.orig):
            raise ApplicationError(
                f"the database connection failed: {_clean(exc, connector)}",
                type=errors.DATABASE_UNAVAILABLE,
                next_retry_delay=jittered_delay(request),
            ) from None
        raise ApplicationError(
            f"the database refused the statement: {_clean(exc, connector)}",
            type=errors.SQL_ERROR,
            non_retryable=True,
        ) from None
    except StatementError as exc:
        raise ApplicationError(
            f"the statement cannot run: {_clean(exc, connector)}", type=errors.SQL_ERROR, non_retryable=True
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ApplicationError(
            f"the database connection failed: {_clean(exc, connector)}",
            type=errors.DATABASE_UNAVAILABLE,
            next_retry_delay=jittered_delay(request),
        ) from None
    finally:
        await connection.close()


async def _execute(
    connection: AsyncConnection,
    connector: SqlConnectorConfig,
    statement: Any,
    kind: StatementKind,
    params: dict[str, Any],
    params_each: list[dict[str, Any]] | None,
    max_rows: int,
) -> dict[str, Any]:
    if not connector.allow_writes and connection.dialect.name == "postgresql":
        await connection.execute(text("SET TRANSACTION READ ONLY"))
    if kind == "read":
        result = await connection.execute(statement, params)
        fetched = result.mappings().fetchmany(max_rows + 1)
        await connection.rollback()
        rows = [{str(k): json_safe(v) for k, v in row.items()} for row in fetched[:max_rows]]
        return {"rows": rows, "row_count": len(rows), "truncated": len(fetched) > max_rows}
    if params_each is not None:
        result = await connection.execute(statement, params_each)
        count = result.rowcount if result.rowcount >= 0 else len(params_each)
        await connection.commit()
        return {"row_count": count}
    result = await connection.execute(statement, params)
    output: dict[str, Any] = {"row_count": result.rowcount}
    if result.returns_rows:
        returned = result.mappings().fetchmany(max_rows)
        output["rows"] = [{str(k): json_safe(v) for k, v in row.items()} for row in returned]
    await connection.commit()
    return output


def json_safe(value: Any) -> Any:
    """A database value as JSON data: times as ISO 8601, decimals as numbers, bytes as base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    return str(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _config_error(f"with.{where}: expected an object, got {type(value).__name__}")
    return value


def _config(values: dict[str, Any]) -> DatabaseQueryConfig:
    try:
        return parse_config(DatabaseQueryConfig, values)
    except ValueError as exc:
        raise _config_error(str(exc)) from None


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.CONFIG_INVALID, non_retryable=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _clean(exc: BaseException, connector: SqlConnectorConfig) -> str:
    """The driver's message without SQLAlchemy's trailer; a password in it is masked on the way out, with
    the connector's other credentials (``ConnectorLookup.get``)."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = f"{type(source).__name__}: {_first_line(source)}"
    return message.replace(connector.url, mask_url(connector.url))
