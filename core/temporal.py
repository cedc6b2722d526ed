"""The Temporal client factory, so the API, the worker and the tests connect the same way."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from core.codec import encryption_codec
from core.payloads import data_converter
from core.settings import Settings
from core.telemetry import client_interceptors


async def connect(settings: Settings, *, runtime: Runtime | None = None, readable: bool = False) -> Client:
    """A client for the configured frontend and namespace, with payloads by reference (encrypted when the
    settings hold keys, ``core.codec``) and tracing; a worker passes the runtime that serves its metrics
    (``core.telemetry.worker_runtime``), the API asks for values it can always answer with (``readable``,
    see :class:`core.payloads.ReadablePayloadConverter`)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(
            settings.blob_dir,
            settings.payload_ref_bytes,
            encryption=encryption_codec(settings),
            readable=readable,
        ),
        interceptors=client_interceptors(),
        runtime=runtime,
    )
