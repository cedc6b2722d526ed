"""Event triggers: ``emit`` steps and execution events start the definitions whose triggers match."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.conftest import api_settings
from tests.support.api import running_api
from worker import conveyor_worker


@pytest.fixture
async def shared(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker on one store: the worker looks event triggers up where the API keeps them."""
    settings = api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/events.db")
    async with running_api(settings) as api, conveyor_worker(client, settings):
        yield api


async def _started_by(client: Client, definition: str, expected: int) -> list[dict[str, Any]]:
    found: list[Any] = []
    for _ in range(100):
        found = [w async for w in client.list_workflows(f"ConveyorDefinition = '{definition}'")]
        if len(found) >= expected:
            break
        await asyncio.sleep(0.1)
    return [{"id": w.id, "trigger": w.typed_search_attributes} for w in found]


BIG_ORDERS = {
    "event": "order.*",
    "when": "{{ event.data.total | default(0) > 100 }}",
    "input_mapping": {"order": "{{ event.data.id }}"},
}


async def test_emit_starts_matching_triggers_once(shared: httpx.AsyncClient, client: Client) -> None:
    api = shared
    target = {
        "name": "on-big-order",
        "steps": [{"id": "note", "type": "transform", "with": {"value": "{{ input.order }}"}}],
    }
    source = {
        "name": "order-source",
        "steps": [
            {
                "id": "big",
                "type": "emit",
                "with": {"event": "order.created", "data": {"id": "A-1", "total": 150}},
            },
            {
                "id": "small",
                "type": "emit",
                "with": {"event": "order.created", "data": {"id": "A-2", "total": 50}},
            },
            {"id": "other", "type": "emit", "with": {"event": "order.cancelled", "data": {"id": "A-3"}}},
        ],
    }
    for document in (target, source):
        assert (await api.post("/api/v1/definitions", json=document)).status_code == 201
    created = await api.post(
        "/api/v1/definitions/on-big-order/triggers",
        json={"type": "event", "config": BIG_ORDERS},
    )
    assert created.status_code == 201, created.text
    result = (await api.post("/api/v1/definitions/order-source/executions", json={"wait": 30})).json()
    assert result["state"] == "COMPLETED", result
    execution = (await api.get(f"/api/v1/executions/{result['execution_id']}")).json()
    assert execution["steps"][0]["status"] == "completed"
    started = await _started_by(client, "on-big-order", 1)
    assert len(started) == 1
    follow_up = await client.get_workflow_handle(started[0]["id"]).result()
    assert follow_up["output"] == "A-1"


async def test_a_completed_execution_starts_its_follow_up(shared: httpx.AsyncClient, client: Client) -> None:
    api = shared
    first = {"name": "step-one", "steps": [{"id": "a", "type": "transform", "with": {"value": 41}}]}
    second = {
        "name": "step-two",
        "steps": [{"id": "b", "type": "transform", "with": {"value": "{{ input.result + 1 }}"}}],
    }
    for document in (first, second):
        await api.post("/api/v1/definitions", json=document)
    trigger = {"event": "execution.completed", "when": "{{ event.data.definition == 'step-one' }}",
               "input_mapping": {"result": "{{ event.data.output }}"}}  # fmt: skip
    assert (
        await api.post("/api/v1/definitions/step-two/triggers", json={"type": "event", "config": trigger})
    ).status_code == 201
    await asyncio.sleep(1.1)  # each API process re-reads who listens for execution events once a second
    done = (await api.post("/api/v1/definitions/step-one/executions", json={"wait": 30})).json()
    assert done["state"] == "COMPLETED"
    started = await _started_by(client, "step-two", 1)
    assert len(started) == 1
    assert (await client.get_workflow_handle(started[0]["id"]).result())["output"] == 42
