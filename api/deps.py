"""What routes get injected: settings, a database session, the Temporal client and the sealer of secrets at
rest, owned by the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from core.sealing import Sealer
from core.settings import Settings
from core.stats import StuckGauge


@dataclass
class Resources:
    """Clients the app opens in its lifespan and closes at shutdown."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: Client
    sealer: Sealer
    """Seals and opens the secrets the store keeps (connector configurations, webhook secrets)."""
    stuck_gauge: StuckGauge
    """The ``/metrics`` gauge of stuck executions, counted at most once per window."""


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


def get_sealer(request: Request) -> Sealer:
    return _resources(request).sealer


def get_stuck_gauge(request: Request) -> StuckGauge:
    return _resources(request).stuck_gauge


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SealerDep = Annotated[Sealer, Depends(get_sealer)]
StuckGaugeDep = Annotated[StuckGauge, Depends(get_stuck_gauge)]
