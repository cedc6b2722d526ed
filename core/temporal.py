"""The Temporal client factory, so the API, the worker and the tests connect the same way."""

from __future__ import annotations

from temporalio.client import Client

from core.settings import Settings


async def connect(settings: Settings) -> Client:
    """A client for the configured frontend and namespace."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
