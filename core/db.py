"""The store's engine and sessions: SQLite through aiosqlite by default, PostgreSQL through asyncpg."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from core.logging import configure_logging
from core.sealing import Sealer, secret_sealer
from core.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; for SQLite the file's folder is created and WAL mode is on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            # WAL lets the API read while another process writes; foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL stays consistent after a crash and saves an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def store_key(session: AsyncSession) -> str:
    """Which store a session talks to, for caches that hold per-store data."""
    bind = session.bind
    if isinstance(bind, AsyncEngine):
        return str(bind.url)
    return str(bind.engine.url) if bind is not None else ""


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(connection: Connection | None = None, sealer: Sealer | None = None) -> Config:
    """Alembic's configuration, pointed at our migrations (and at ``connection`` when given). Migrations
    that seal secrets use ``sealer``, else the process settings' keys."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    if sealer is not None:
        config.attributes["sealer"] = sealer
    return config


async def migrate(engine: AsyncEngine, *, sealer: Sealer | None = None) -> None:
    """Bring the schema to the latest migration; ``sealer`` seals secrets a migration finds in clear."""

    def upgrade(connection: Connection) -> None:
        # "heads": features add their tables in migrations of their own, which may branch from one parent.
        command.upgrade(alembic_config(connection, sealer), "heads")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


async def _migrate_configured() -> None:
    """``python -m core.db``: what the API does at start before it serves, for a store many replicas share:
    the migrations, then every stored secret checked and moved to the active key (``core/resealing.py``)."""
    from core.resealing import reseal  # here: it reaches this module through core.triggers and executions

    settings = get_settings()
    configure_logging(settings)
    sealer = secret_sealer(settings)
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine, sealer=sealer)
        resealed = await reseal(session_factory(engine), sealer)
        logging.getLogger("conveyor.db").info("secrets at rest: %s", resealed.summary())
    finally:
        await engine.dispose()


if __name__ == "__main__":
    import asyncio

    asyncio.run(_migrate_configured())
