"""What the example processors need from the worker: its settings and a session on the Conveyor store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from activities.stages import StageItem
from core.db import create_engine, session_factory
from core.settings import Settings, get_settings

_ENGINES: dict[tuple[str, int], AsyncEngine] = {}


def settings_of(item: StageItem) -> Settings:
    """The stage worker's settings, or the process-wide ones for an item built by hand (tests, B5's
    polling side)."""
    return item.settings if item.settings is not None else get_settings()


def engine_for(url: str) -> AsyncEngine:
    """One engine per store and event loop: an asyncpg pool cannot move between loops (tests run several)."""
    key = (url, id(asyncio.get_running_loop()))
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = create_engine(url)
    return engine


@asynccontextmanager
async def store_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the Conveyor store (``CONVEYOR_DATABASE_URL``); the caller commits."""
    async with session_factory(engine_for(settings.database_url))() as session:
        yield session


async def dispose_engines() -> None:
    """Close every cached engine of the running loop (tests and the benchmark call it before it ends)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _ENGINES if k[1] == loop]:
        await _ENGINES.pop(key).dispose()
