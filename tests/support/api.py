"""Run the real API app on a loopback port for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from api.app import create_app
from core.settings import Settings
from tests.support.target import serve


@asynccontextmanager
async def running_api(settings: Settings, *, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API served by uvicorn with ``settings`` (and an API key, if given)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        serve(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http,
    ):
        yield http
