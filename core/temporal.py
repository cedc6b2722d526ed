"""The Temporal client factory, so the API, the worker and the tests connect the same way."""

from __future__ import annotations

from temporalio.client import Client

from core.payloads import data_converter
from core.settings import Settings


async def connect(settings: Settings) -> Client:
    """A client for the configured frontend and namespace, with payloads by reference."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings.blob_dir, settings.payload_ref_bytes),
    )
