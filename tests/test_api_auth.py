"""API keys and roles on every route, and the store on PostgreSQL behind the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import api_settings
from tests.support.api import running_api

BOOTSTRAP = "cvk_boot0000_" + "b" * 40
DOC = {"name": "guarded", "steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n + 1 }}"}}]}


@pytest.fixture
async def secured(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with auth on and a bootstrap admin key, on SQLite and on PostgreSQL."""
    settings = api_settings(temporal_env, task_queue, database_url, auth="on", bootstrap_admin_key=BOOTSTRAP)
    async with running_api(settings) as http:
        yield http


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_roles_gate_every_route(secured: httpx.AsyncClient) -> None:
    api = secured
    anonymous = await api.get("/api/v1/definitions")
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    wrong = await api.get("/api/v1/definitions", headers=_as("cvk_nope_" + "x" * 30))
    assert wrong.status_code == 401

    keys = {}
    for role in ("viewer", "operator"):
        made = await api.post("/api/v1/api-keys", json={"name": role, "role": role}, headers=_as(BOOTSTRAP))
        assert made.status_code == 201
        keys[role] = made.json()["key"]
    listed = (await api.get("/api/v1/api-keys", headers=_as(BOOTSTRAP))).json()
    assert {k["name"] for k in listed} >= {"viewer", "operator"} and all("key" not in k for k in listed)

    viewer, operator = _as(keys["viewer"]), _as(keys["operator"])
    denied = await api.post("/api/v1/definitions", json=DOC, headers=operator)
    assert denied.status_code == 403 and denied.json()["details"]["required_role"] == "admin"
    assert (await api.post("/api/v1/definitions", json=DOC, headers=_as(BOOTSTRAP))).status_code == 201
    assert (await api.get("/api/v1/definitions/guarded", headers=viewer)).status_code == 200
    assert (
        await api.post("/api/v1/definitions/guarded/executions", json={}, headers=viewer)
    ).status_code == 403
    started = await api.post(
        "/api/v1/definitions/guarded/executions", json={"input": {"n": 41}, "wait": 20}, headers=operator
    )
    assert started.status_code == 201 and started.json()["output"] == 42
    assert (await api.get("/api/v1/api-keys", headers=operator)).status_code == 403
    assert (await api.get("/health")).status_code == 200  # liveness needs no key

    key_id = keys["viewer"].split("_")[1]
    assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=_as(BOOTSTRAP))).status_code == 200
    assert (await api.get("/api/v1/definitions", headers=viewer)).status_code == 401


async def test_ready_reports_database_temporal_and_worker(api: httpx.AsyncClient) -> None:
    ready = await api.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["workers"] >= 1
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200 and "python_info" in metrics.text


async def test_not_ready_without_a_worker(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    settings = api_settings(temporal_env, "queue-nobody-polls", f"sqlite+aiosqlite:///{tmp_path}/r.db")
    async with running_api(settings) as api:
        ready = await api.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["workers"] == 0
