"""Request body limits on every endpoint of the real API, with and without Content-Length."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.routes import Endpoint, endpoints

LIMIT = 1_000
HOOK_LIMIT = 3_000
UPLOAD_LIMIT = 2_000
OVERSIZE = 100_000
"""Over every limit here, pipeline uploads' multipart slack included."""


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = api_settings(
        temporal_env,
        task_queue,
        f"sqlite+aiosqlite:///{tmp_path}/api.db",
        max_request_bytes=LIMIT,
        webhook_max_body_bytes=HOOK_LIMIT,
        max_upload_bytes=UPLOAD_LIMIT,
    )
    async with running_api(settings) as http:
        yield http


def with_body() -> list[Endpoint]:
    return [e for e in endpoints(create_app()) if e.method in ("POST", "PUT", "PATCH", "DELETE")]


async def chunks(size: int, piece: int = 1_000) -> AsyncIterator[bytes]:
    """A body sent chunked: no Content-Length, so only counting what arrives can stop it."""
    sent = 0
    while sent < size:
        yield b"x" * min(piece, size - sent)
        sent += piece


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, (response.request.url, response.text)
    body = response.json()
    assert body["error_code"] == "PAYLOAD_TOO_LARGE"
    assert "larger than" in body["message"]


@pytest.mark.parametrize("endpoint", with_body(), ids=lambda e: f"{e.method} {e.path}")
async def test_declared_oversize_body_is_refused(api: httpx.AsyncClient, endpoint: Endpoint) -> None:
    response = await api.request(
        endpoint.method,
        endpoint.url(),
        content=b"{" + b" " * OVERSIZE + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert_too_large(response)


@pytest.mark.parametrize(
    "endpoint",
    [e for e in with_body() if e.reads_body],
    ids=lambda e: f"{e.method} {e.path}",
)
async def test_chunked_oversize_body_is_refused(api: httpx.AsyncClient, endpoint: Endpoint) -> None:
    response = await api.request(
        endpoint.method,
        endpoint.url(),
        content=chunks(OVERSIZE),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response)


async def test_a_body_within_the_limit_goes_through_chunked(api: httpx.AsyncClient) -> None:
    document = b'{"name": "small", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]}'
    assert len(document) < LIMIT

    async def one_piece() -> AsyncIterator[bytes]:
        yield document

    response = await api.post(
        "/api/v1/definitions/validate", content=one_piece(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def test_webhooks_have_their_own_limit(api: httpx.AsyncClient) -> None:
    """A body over the API's limit but under the webhook limit reaches the hook's signature check."""
    definition = {"name": "hooked", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]}
    assert (await api.post("/api/v1/definitions", json=definition)).status_code == 201
    created = await api.post(
        "/api/v1/definitions/hooked/triggers",
        json={"type": "webhook", "config": {"scheme": "github", "secret": "hook-secret-0123456789"}},
    )
    assert created.status_code == 201, created.text
    hook = created.json()["url"]
    between = b"{" + b" " * (HOOK_LIMIT - 100) + b"}"
    assert LIMIT < len(between) < HOOK_LIMIT
    unsigned = await api.post(hook, content=between, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401, unsigned.text
    assert_too_large(await api.post(hook, content=chunks(HOOK_LIMIT + 1)))
    assert_too_large(await api.post(hook, content=b" " * (HOOK_LIMIT + 1)))
