"""What routes get injected: settings, a database session and the Temporal client, owned by the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from core.settings import Settings


@dataclass
class Resources:
    """Clients the app opens in its lifespan and closes at shutdown."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: Client


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def get_settings(request: Request) -> Settings:
    return _resources(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _resources(request).sessions() as session:
        yield session


def get_temporal(request: Request) -> Client:
    return _resources(request).temporal


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
