"""A migrated store for tests of connector steps, and connectors written straight into it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from core import connectors
from core.connectors import ConnectorType
from core.db import create_engine, migrate, session_factory
from core.sealing import secret_sealer
from core.settings import Settings

PG_TEST_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
"""The CI machine's PostgreSQL database ``test``; tests make their own uniquely named tables in it."""


@asynccontextmanager
async def migrated_store(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the store at ``url``, brought to the latest migration."""
    engine = create_engine(url)
    try:
        await migrate(engine)
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def add_connector(
    sessions: async_sessionmaker[AsyncSession], name: str, type: ConnectorType, config: dict[str, Any]
) -> None:
    """Store a connector as ``POST /api/v1/connectors`` does, sealed with the key of the suite's settings."""
    async with sessions() as session:
        await connectors.create_connector(
            session, sealer=secret_sealer(Settings()), name=name, type=type, config=config
        )
