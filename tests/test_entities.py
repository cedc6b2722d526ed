"""Entities over the real API, worker and dev server: every transition of Task and ActionPlan, permissions,
history untouched by rejections, visibility lists, the intake follow-up, continue-as-new and metrics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.entities import EntityActivities
from core import entities
from core.settings import Settings
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.connectors import migrated_store
from tests.support.outcome import completes
from tests.support.waiting import eventually
from worker import conveyor_worker
from workflows.entity import EntityWorkflow
from workflows.entity_messages import EntityEvent, EntityView, TransitionRequest
from workflows.lifecycles import ACTION_PLAN, TASK, Actor, Lifecycle
from workflows.sandbox import workflow_runner

T = TypeVar("T")
BOOTSTRAP = "cvk_entadmin_" + "a" * 32


@dataclass
class Api:
    """The API with auth on: an admin client and a way to make clients with other roles."""

    admin: httpx.AsyncClient
    client: Client
    settings: Settings
    url: str

    async def key(self, name: str, role: str) -> httpx.AsyncClient:
        answer = await self.admin.post("/api/v1/api-keys", json={"name": name, "role": role})
        assert answer.status_code in (200, 201), answer.text
        return httpx.AsyncClient(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {answer.json()['key']}"}
        )


@pytest.fixture
async def api(temporal_env: WorkflowEnvironment, client: Client, database_url: str) -> AsyncIterator[Api]:
    """API and worker sharing one store (SQLite and PostgreSQL), so automations see what the API stored."""
    task_queue = f"tq-{uuid.uuid4()}"
    settings = api_settings(temporal_env, task_queue, database_url, auth="on", bootstrap_admin_key=BOOTSTRAP)
    async with (
        conveyor_worker(client, settings),
        running_api(settings, key=BOOTSTRAP) as admin,
    ):
        yield Api(admin, client, settings, str(admin.base_url).rstrip("/"))


def path_to(lifecycle: Lifecycle, goal: str) -> list[str]:
    """The shortest list of states leading from the initial state to ``goal``."""
    paths = {lifecycle.initial: [lifecycle.initial]}
    frontier = [lifecycle.initial]
    while frontier:
        here = frontier.pop(0)
        for rule in lifecycle.allowed_from(here):
            if rule.to_state not in paths:
                paths[rule.to_state] = [*paths[here], rule.to_state]
                frontier.append(rule.to_state)
    return paths[goal][1:]


FIELDS: dict[str, dict[str, Any]] = {
    "task": {"title": "t", "task_type": "general"},
    "action_plan": {"title": "p", "goals": ["g"]},
}


async def created(http: httpx.AsyncClient, entity_type: str, **fields: Any) -> dict[str, Any]:
    answer = await http.post(f"/api/v1/entities/{entity_type}", json={**FIELDS[entity_type], **fields})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def move(
    http: httpx.AsyncClient, entity_type: str, entity_id: str, target: str, **extra: Any
) -> httpx.Response:
    return await http.post(
        f"/api/v1/entities/{entity_type}/{entity_id}/transitions", json={"target_state": target, **extra}
    )


async def history_ids(client: Client, entity_type: str, entity_id: str) -> list[int]:
    """The entity's history event ids once it is idle: its last workflow task done, no activity pending."""
    handle = client.get_workflow_handle(entities.workflow_id(entity_type, entity_id))

    async def idle() -> list[int] | None:
        raw = (await handle.describe()).raw_description
        if raw.pending_activities or raw.HasField("pending_workflow_task"):
            return None
        history = await handle.fetch_history()
        # The history read after an idle describe, and as long as the describe said: nothing in between.
        if len(history.events) != raw.workflow_execution_info.history_length:
            return None
        return [event.event_id for event in history.events]

    return await eventually(idle, f"{entity_id} idle")


@pytest.mark.parametrize("lifecycle", [TASK, ACTION_PLAN], ids=lambda lc: lc.type)
async def test_every_transition_is_allowed_or_rejected(api: Api, lifecycle: Lifecycle) -> None:
    kind = lifecycle.type
    for source in lifecycle.states:
        allowed = {rule.to_state for rule in lifecycle.allowed_from(source)}
        # Disallowed moves are tried on one entity sitting in ``source``; it must not move or record.
        probe = await created(api.admin, kind)
        for step in path_to(lifecycle, source):
            assert (await move(api.admin, kind, probe["id"], step)).status_code == 200
        running = source not in lifecycle.terminal
        before = await history_ids(api.client, kind, probe["id"]) if running else None
        for target in lifecycle.states:
            if target in allowed:
                continue
            answer = await move(api.admin, kind, probe["id"], target)
            assert answer.status_code == 400, (source, target, answer.text)
            body = answer.json()
            assert body["error_code"] == "INVALID_TRANSITION"
            assert {k: body["details"][k] for k in ("current_state", "target_state", "entity_type")} == {
                "current_state": source,
                "target_state": target,
                "entity_type": kind,
            }
        if running:
            assert await history_ids(api.client, kind, probe["id"]) == before, source
        state = (await api.admin.get(f"/api/v1/entities/{kind}/{probe['id']}")).json()["state"]
        assert state == source
        for target in sorted(allowed):
            fresh = await created(api.admin, kind)
            for step in path_to(lifecycle, source):
                assert (await move(api.admin, kind, fresh["id"], step)).status_code == 200
            answer = await move(api.admin, kind, fresh["id"], target, notes="why", context={"k": 1})
            assert answer.status_code == 200, (source, target, answer.text)
            body = answer.json()
            assert body["state"] == target
            assert body["transition"]["from_state"] == source
            assert body["transition"]["notes"] == "why" and body["transition"]["context"] == {"k": 1}


async def test_permissions_follow_roles_and_ownership(api: Api) -> None:
    viewer = await api.key("vera", "viewer")
    bob = await api.key("bob", "operator")
    carol = await api.key("carol", "operator")
    async with viewer, bob, carol:
        denied = await viewer.post("/api/v1/entities/task", json={"title": "x"})
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"

        task = await created(bob, "task", assigned_to="dave")
        assert task["created_by"] == "bob"
        before = await history_ids(api.client, "task", task["id"])
        for http in (viewer, carol):  # viewer: no UPDATE_TASK; carol: neither creator nor assignee
            answer = await move(http, "task", task["id"], "in_progress")
            assert answer.status_code == 403, answer.text
            assert answer.json()["error_code"] == "PERMISSION_DENIED"
        assert await history_ids(api.client, "task", task["id"]) == before

        assigned = await created(api.admin, "task", assigned_to="carol")
        assert (await move(carol, "task", assigned["id"], "in_progress")).status_code == 200
        assert (await move(bob, "task", task["id"], "in_progress")).status_code == 200
        assert (await move(api.admin, "task", task["id"], "blocked")).status_code == 200

        plan = await created(bob, "action_plan")
        refused = await move(bob, "action_plan", plan["id"], "active")
        assert refused.status_code == 403
        assert refused.json()["details"]["required_permission"] == "ACTIVATE_ACTION_PLAN"
        assert (await move(api.admin, "action_plan", plan["id"], "active")).status_code == 200
        assert (await move(bob, "action_plan", plan["id"], "archived")).status_code == 200

        sla = await bob.post("/api/v1/sla-configs", json={"task_type": "intake", "target_minutes": 5})
        assert sla.status_code == 403 and sla.json()["details"]["required_permission"] == "MANAGE_SLA"


async def test_list_filters_are_a_visibility_query(api: Api) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    blocked = await created(api.admin, "task", task_type="intake", assigned_to=owner)
    await created(api.admin, "task", task_type="intake", assigned_to=owner)
    other = await created(api.admin, "task", task_type="review", assigned_to=owner)
    assert (await move(api.admin, "task", blocked["id"], "blocked")).status_code == 200
    assert (await move(api.admin, "task", other["id"], "blocked")).status_code == 200

    async def listed() -> list[dict[str, Any]] | None:
        answer = await api.admin.get(
            "/api/v1/entities/task", params={"state": "blocked", "task_type": "intake", "assigned_to": owner}
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items if items else None

    items = await eventually(listed, "the blocked intake task listed")
    assert [item["id"] for item in items] == [blocked["id"]]
    assert items[0]["state"] == "blocked" and items[0]["task_type"] == "intake"
    assert entities.entity_query("task", state="blocked", task_type="intake") == (
        "WorkflowType = 'EntityWorkflow' AND ConveyorDefinition = 'task' AND ConveyorState = 'blocked' "
        "AND ConveyorTaskType = 'intake'"
    )
    unknown = await api.admin.get("/api/v1/entities/spaceship")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "LIFECYCLE_NOT_FOUND"


async def test_completed_intake_creates_one_assessment_even_when_retried(api: Api) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    intake = await created(api.admin, "task", task_type="intake", assigned_to=owner, title="Application 7")
    assert (await move(api.admin, "task", intake["id"], "in_progress")).status_code == 200
    first = await move(api.admin, "task", intake["id"], "completed", request_id="done-1")
    assert first.status_code == 200 and not first.json()["repeated"]
    # A retry while the entity runs is answered by the entity's record of request ids: the first outcome.
    again = await move(api.admin, "task", intake["id"], "completed", request_id="done-1")
    assert again.status_code == 200, again.text
    assert again.json()["transition"] == first.json()["transition"] and again.json()["seq"] == 2
    assert again.json()["repeated"], "a retry with the same request_id must say it is a repeat"
    # Once final, the workflow ends; a retry then still gets the first outcome, not a rejection.
    intake_handle = api.client.get_workflow_handle(entities.workflow_id("task", intake["id"]))
    await intake_handle.result()
    late = await move(api.admin, "task", intake["id"], "completed", request_id="done-1")
    assert late.status_code == 200, late.text
    assert late.json()["transition"] == first.json()["transition"] and late.json()["repeated"]
    assert (await move(api.admin, "task", intake["id"], "completed")).status_code == 400

    async def assessments() -> list[dict[str, Any]] | None:
        answer = await api.admin.get(
            "/api/v1/entities/task", params={"task_type": "assessment", "assigned_to": owner}
        )
        items: list[dict[str, Any]] = answer.json()["items"]
        return items if items else None

    found = await eventually(assessments, "the follow-up assessment task")
    follow_up = (await api.admin.get(f"/api/v1/entities/task/{found[0]['id']}")).json()
    assert follow_up["data"]["priority"] == "high"
    assert follow_up["data"]["title"] == "Assessment: Application 7"
    assert follow_up["data"]["metadata"] == {"follows": intake["id"]}
    assert follow_up["created_by"] == "automation:intake_followup"

    # The automation activity retried (same event) finds the follow-up it made instead of making another.
    view: EntityView = await api.client.get_workflow_handle(entities.workflow_id("task", intake["id"])).query(
        "entity", result_type=EntityView
    )
    event = EntityEvent(
        event="entity.transitioned",
        event_id=f"{entities.workflow_id('task', intake['id'])}:t2",
        entity_type="task",
        entity_id=intake["id"],
        entity={**view.entity.data, "state": "completed"},
        at=view.entity.updated_at,
        from_state="in_progress",
        to_state="completed",
        automations=[
            {
                "id": "intake_followup",
                "event": "entity.transitioned",
                "predicate": TASK.automations[0].predicate,
                "actions": [{"type": a.type, **a.params} for a in TASK.automations[0].actions],
            }
        ],
    )
    async with migrated_store(api.settings.database_url) as sessions, httpx.AsyncClient() as http:
        activities = EntityActivities(sessions, api.client, http, api.settings)
        env = ActivityEnvironment()
        env.info = replace(env.info, task_queue=api.settings.task_queue)
        report = await env.run(activities.entity_event, event)
    assert report["results"] == [
        {"rule": "intake_followup", "action": "create_entity", "entity_id": found[0]["id"], "created": False}
    ]
    await asyncio.sleep(0.5)
    assert len(await assessments() or []) == 1
    # The entity's whole life replays deterministically.
    await Replayer(workflows=[EntityWorkflow], workflow_runner=workflow_runner()).replay_workflow(
        await intake_handle.fetch_history()
    )
    history = (await api.admin.get(f"/api/v1/entities/task/{intake['id']}/history")).json()
    assert [t["to_state"] for t in history["transitions"]] == ["in_progress", "completed"]
    assert history["transitions"][1]["actor"] == "bootstrap admin"
    assert history["transitions"][1]["request_id"] == "done-1"


async def test_concurrent_repeats_of_a_request_id_move_once_and_say_so(api: Api) -> None:
    task = await created(api.admin, "task")
    answers = await asyncio.gather(
        *(move(api.admin, "task", task["id"], "in_progress", request_id="start-1") for _ in range(5))
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sorted(a.json()["repeated"] for a in answers) == [False, True, True, True, True]
    assert {a.json()["transition"]["seq"] for a in answers} == {1}
    history = (await api.admin.get(f"/api/v1/entities/task/{task['id']}/history")).json()
    assert [t["to_state"] for t in history["transitions"]] == ["in_progress"]


async def test_long_lived_entity_continues_as_new(api: Api) -> None:
    async with migrated_store(api.settings.database_url) as sessions, sessions() as session:
        made = await entities.create_entity(
            session,
            api.client,
            task_queue=api.settings.task_queue,
            entity_type="task",
            data={"title": "long", "task_type": "review"},
            actor=Actor.of_role("bootstrap admin", "admin"),
            continue_after=2,
        )
    entity_id = made.entity.id
    handle = api.client.get_workflow_handle(entities.workflow_id("task", entity_id))
    first_run = (await handle.describe()).run_id
    for target in ("in_progress", "blocked", "in_progress", "blocked", "in_progress"):
        assert (await move(api.admin, "task", entity_id, target)).status_code == 200

    async def continued() -> str | None:
        run = (await handle.describe()).run_id
        return run if run != first_run else None

    await eventually(continued, "a continue-as-new")
    history = (await api.admin.get(f"/api/v1/entities/task/{entity_id}/history")).json()
    assert [t["seq"] for t in history["transitions"]] == [1, 2, 3, 4, 5]
    assert history["sla"]["tracking"] and history["sla_records"][0]["target_minutes"] == 120
    assert (await move(api.admin, "task", entity_id, "completed")).status_code == 200


async def test_metrics_count_transitions_and_evaluations(api: Api) -> None:
    task = await created(api.admin, "task", task_type="intake")
    assert (await move(api.admin, "task", task["id"], "completed")).status_code == 400
    assert (await move(api.admin, "task", task["id"], "in_progress")).status_code == 200
    assert (await move(api.admin, "task", task["id"], "completed")).status_code == 200

    async def scraped() -> str | None:
        text = (await api.admin.get("/metrics")).text
        return (
            text
            if 'automation_trigger_evaluations_total{outcome="matched",trigger_id="intake_followup"}' in text
            else None
        )

    text = await eventually(scraped, "the follow-up rule counted")
    assert 'workflow_transition_total{entity_type="task",result="accepted"}' in text
    assert 'workflow_transition_total{entity_type="task",result="invalid_transition"}' in text
    assert 'automation_trigger_evaluations_total{outcome="not_matched",trigger_id="intake_followup"}' in text
    assert "sla_records_breached_total" in text
    await api.admin.get("/api/v1/entities/task")
    assert 'active_tasks_total{state="new"}' in (await api.admin.get("/metrics")).text


async def test_entity_step_creates_and_moves_entities(api: Api) -> None:
    definition = {
        "name": f"entity-step-{uuid.uuid4().hex[:6]}",
        "steps": [
            {
                "id": "make",
                "type": "entity",
                "with": {"action": "create", "entity_type": "task", "fields": {"title": "{{ input.title }}"}},
            },
            {
                "id": "start",
                "type": "entity",
                "with": {
                    "action": "transition",
                    "entity_type": "task",
                    "id": "{{ steps.make.output.id }}",
                    "target_state": "in_progress",
                    "notes": "started by a definition",
                },
            },
            {
                "id": "backwards",
                "type": "entity",
                "optional": True,
                "with": {
                    "action": "transition",
                    "entity_type": "task",
                    "id": "{{ steps.make.output.id }}",
                    "target_state": "new",
                },
            },
        ],
        "output": {"id": "{{ steps.make.output.id }}", "state": "{{ steps.start.output.state }}"},
    }
    result = await completes(api.client, api.settings.task_queue, definition, {"title": "from a flow"})
    assert result.output["state"] == "in_progress"
    refused = next(step for step in result.steps if step.id == "backwards")
    assert refused.status == "failed" and refused.error is not None
    assert refused.error.code == "INVALID_TRANSITION"
    entity = (await api.admin.get(f"/api/v1/entities/task/{result.output['id']}/history")).json()
    assert entity["entity"]["data"]["title"] == "from a flow"
    assert entity["entity"]["created_by"].startswith("execution:")
    assert [t["notes"] for t in entity["transitions"]] == ["started by a definition"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_entities_survive_a_worker_that_keeps_none_in_its_cache(
    client: Client, database_url: str
) -> None:
    """Every workflow task on a worker without a cache replays the whole history, and a transition sent
    right after the start reaches the worker in one activation with the start: B4 found the timer and the
    SLA-record activity issued in one order then and the other on replay. Now every entity completes and
    its history replays."""
    settings = Settings(task_queue=f"tq-{uuid.uuid4()}", database_url=database_url)
    admin = Actor("b4", "admin", ("CREATE_TASK", "UPDATE_TASK"))
    async with migrated_store(database_url) as sessions, conveyor_worker(client, settings) as base:
        config = base.config()
        config["task_queue"] = queue = f"{settings.task_queue}-nocache"
        config["max_cached_workflows"] = 0
        async with Worker(**config):
            ids = []
            for n in range(8):
                async with sessions() as session:
                    made = await entities.create_entity(
                        session,
                        client,
                        task_queue=queue,
                        entity_type="task",
                        data={"title": f"t{n}", "task_type": "intake"},
                        actor=admin,
                    )
                ids.append(made.entity.id)

            async def move(entity_id: str, target: str) -> None:
                request = TransitionRequest(
                    target_state=target,
                    actor=admin.name,
                    role=admin.role,
                    permissions=list(admin.permissions),
                )
                await entities.transition_entity(
                    client, entity_type="task", entity_id=entity_id, request=request
                )

            await asyncio.gather(*(move(i, "in_progress") for i in ids))
            await asyncio.gather(*(move(i, "completed") for i in ids))
            handles = [
                client.get_workflow_handle(entities.workflow_id("task", i), result_type=EntityView)
                for i in ids
            ]
            views = [await asyncio.wait_for(h.result(), 60) for h in handles]
    assert [view.entity.state for view in views] == ["completed"] * len(ids)
    replayer = Replayer(workflows=[EntityWorkflow], workflow_runner=workflow_runner())
    for handle in handles:
        await replayer.replay_workflow(await handle.fetch_history())
