"""Automation rules over the real API and worker: validation, and every action kind running on an event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.executions import list_executions
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.target import Target
from tests.support.waiting import eventually
from worker import conveyor_worker


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker sharing one SQLite store, so the worker sees the rules the API stores."""
    settings = api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")
    async with running_api(settings) as http, conveyor_worker(client, settings):
        yield http


async def test_rules_are_validated(api: httpx.AsyncClient) -> None:
    bad = await api.post(
        "/api/v1/automations",
        json={
            "id": "bad rule!",
            "event": "entity.exploded",
            "predicate": "{{ input.x }}",
            "actions": [{"type": "teleport"}, {"type": "call_webhook"}],
        },
    )
    assert bad.status_code == 422 and bad.json()["error_code"] == "AUTOMATION_INVALID"
    paths = {p["path"] for p in bad.json()["details"]["problems"]}
    assert paths == {"$.id", "$.event", "$.predicate", "$.actions[0].type", "$.actions[1]"}
    clash = await api.post(
        "/api/v1/automations",
        json={
            "id": "intake_followup",
            "event": "sla.breached",
            "actions": [{"type": "emit_alert", "channel": "log", "message": "x"}],
        },
    )
    assert clash.status_code == 409
    listed = (await api.get("/api/v1/automations")).json()["items"]
    assert {r["id"] for r in listed if r["builtin"]} == {
        "intake_followup",
        "task_sla_breached",
        "action_plan_activated",
    }


async def test_actions_run_on_events(api: httpx.AsyncClient, client: Client, target: Target) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"on-report-{tag}"
    definition = {
        "name": name,
        "steps": [{"id": "note", "type": "transform", "with": {"value": "{{ input.event.entity_id }}"}}],
    }
    assert (await api.post("/api/v1/definitions?publish=true", json=definition)).status_code == 201
    rule = {
        "id": f"critical-{tag}",
        "event": "entity.transitioned",
        "entity_type": "task",
        "predicate": "{{ event.to_state == 'blocked' and event.entity.priority == 'critical' }}",
        "actions": [
            {
                "type": "call_webhook",
                "url": f"{target.url}/hook/{tag}",
                "payload": {"id": "{{ event.entity_id }}"},
            },
            {
                "type": "transition_entity",
                "entity_type": "task",
                "entity_id": "{{ event.entity_id }}",
                "target_state": "cancelled",
                "notes": "critical and blocked",
            },
            {"type": "start_definition", "definition": name},
        ],
    }
    made = await api.post("/api/v1/automations", json=rule)
    assert made.status_code == 201, made.text

    calm = (await api.post("/api/v1/entities/task", json={"title": "calm", "priority": "low"})).json()
    hot = (await api.post("/api/v1/entities/task", json={"title": "hot", "priority": "critical"})).json()
    for task in (calm, hot):
        answer = await api.post(
            f"/api/v1/entities/task/{task['id']}/transitions", json={"target_state": "blocked"}
        )
        assert answer.status_code == 200

    async def cancelled() -> dict[str, Any] | None:
        read: dict[str, Any] = (await api.get(f"/api/v1/entities/task/{hot['id']}/history")).json()
        return read if read["entity"]["state"] == "cancelled" else None

    history = await eventually(cancelled, "the automation's transition")
    last = history["transitions"][-1]
    assert last["actor"] == f"automation:critical-{tag}" and last["notes"] == "critical and blocked"
    hooks = [r for r in target.requests if r.get("path") == f"/hook/{tag}"]
    assert [h["json"] for h in hooks] == [{"id": hot["id"]}]

    async def started() -> list[dict[str, Any]] | None:
        page = await list_executions(client, definition=name)
        return page.executions or None

    runs = await eventually(started, "the definition started by the rule")
    assert len(runs) == 1
    calm_now = (await api.get(f"/api/v1/entities/task/{calm['id']}")).json()
    assert calm_now["state"] == "blocked"
    metrics = (await api.get("/metrics")).text
    assert (
        f'automation_trigger_evaluations_total{{outcome="not_matched",trigger_id="critical-{tag}"}}'
        in metrics
    )


async def test_sla_configs_over_the_api(api: httpx.AsyncClient) -> None:
    task_type = f"audit-{uuid.uuid4().hex[:6]}"
    bad = await api.post(
        "/api/v1/sla-configs", json={"task_type": task_type, "target_minutes": 5, "pause_on": ["napping"]}
    )
    assert bad.status_code == 422 and bad.json()["error_code"] == "SLA_CONFIG_INVALID"
    assert bad.json()["details"]["problems"] == [
        {"path": "$.pause_on[0]", "message": "unknown state 'napping'"}
    ]
    assert (await api.post("/api/v1/sla-configs", json={"target_minutes": 0})).status_code == 422
    made = await api.post(
        "/api/v1/sla-configs", json={"task_type": task_type, "target_minutes": 5, "pause_on": ["blocked"]}
    )
    assert made.status_code == 201, made.text
    config = made.json()
    assert config["start_on"] == ["in_progress"] and config["stop_on"] == ["completed", "cancelled"]
    off = await api.post(
        "/api/v1/sla-configs", json={"task_type": "other", "target_minutes": 9, "active": False}
    )
    listed = (await api.get("/api/v1/sla-configs", params={"active_only": True})).json()["items"]
    ids = [item["id"] for item in listed]
    assert config["id"] in ids and off.json()["id"] not in ids
    assert {"task-intake", "task-general"} <= set(ids)

    task = (await api.post("/api/v1/entities/task", json={"title": "audit", "task_type": task_type})).json()
    read = (await api.get(f"/api/v1/entities/task/{task['id']}")).json()
    assert read["sla"]["config_id"] == config["id"]
    assert read["sla"]["rule"]["target_minutes"] == 5 and read["sla"]["rule"]["pause_on"] == ["blocked"]
    plain = (await api.post("/api/v1/entities/task", json={"title": "x", "task_type": "intake"})).json()
    assert (await api.get(f"/api/v1/entities/task/{plain['id']}")).json()["sla"]["config_id"] == "task-intake"


async def test_a_completed_execution_runs_the_rules_listening_to_it(api: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"auto-src-{tag}"
    definition = {
        "name": name,
        "steps": [{"id": "title", "type": "transform", "with": {"value": {"title": "review {{ input.n }}"}}}],
    }
    assert (await api.post("/api/v1/definitions", json=definition)).status_code == 201
    rule = {
        "id": f"after-{tag}",
        "event": "execution.completed",
        "predicate": f"{{{{ event.entity.definition == '{name}' }}}}",
        "actions": [
            {
                "type": "create_entity",
                "entity_type": "task",
                "fields": {"title": "{{ event.entity.output.title }}", "task_type": "review"},
            }
        ],
    }
    made = await api.post("/api/v1/automations", json=rule)
    assert made.status_code == 201, made.text
    await asyncio.sleep(1.1)  # executions learn that someone listens from a per-second cache
    started = await api.post(f"/api/v1/definitions/{name}/executions", json={"input": {"n": 7}, "wait": 30})
    assert started.status_code == 201 and started.json()["state"] == "COMPLETED", started.text

    prefix = started.json()["execution_id"].replace("/", ":")

    async def follow_up() -> list[dict[str, Any]] | None:
        page = (await api.get("/api/v1/entities/task", params={"task_type": "review"})).json()
        return [task for task in page["items"] if task["id"].startswith(prefix)] or None

    [task] = await eventually(follow_up, "the task the rule creates")
    read = (await api.get(f"/api/v1/entities/task/{task['id']}")).json()
    assert read["data"]["title"] == "review 7", read
