"""Lifecycles as data: the built-in Task and ActionPlan, validation of custom ones, guards, the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.lifecycles import state_diagram
from tests.conftest import api_settings
from tests.support.api import running_api
from worker import conveyor_worker
from workflows.lifecycles import (
    ACTION_PLAN,
    TASK,
    Actor,
    LifecycleInvalid,
    check_transition,
    lifecycle_document,
    parse_lifecycle,
)

TICKET: dict[str, Any] = {
    "type": "ticket",
    "states": ["open", "escalated", "closed"],
    "initial": "open",
    "terminal": ["closed"],
    "transitions": [
        {
            "from": "open",
            "to": "escalated",
            "permission": "UPDATE_TASK",
            "guard": "{{ entity.severity >= 3 or context.reason == 'customer asked' }}",
        },
        {"from": "open", "to": "closed", "permission": "UPDATE_TASK"},
        {"from": "escalated", "to": "closed", "permission": "UPDATE_TASK"},
    ],
    "fields": {"title": {"type": "string", "required": True}, "severity": {"type": "integer", "default": 1}},
}


def problems_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(LifecycleInvalid) as caught:
        parse_lifecycle(document)
    return [(p["path"], p["message"]) for p in caught.value.problems]


def test_built_in_lifecycles_have_the_notes_transitions() -> None:
    assert {(t.from_state, t.to_state) for t in TASK.transitions} == {
        ("new", "in_progress"),
        ("new", "blocked"),
        ("new", "cancelled"),
        ("in_progress", "completed"),
        ("in_progress", "blocked"),
        ("in_progress", "cancelled"),
        ("blocked", "in_progress"),
        ("blocked", "cancelled"),
    }
    assert {(t.from_state, t.to_state) for t in ACTION_PLAN.transitions} == {
        ("draft", "active"),
        ("draft", "archived"),
        ("active", "archived"),
    }
    assert {rule.task_type: rule.target_minutes for rule in TASK.sla if rule.task_type} == {
        "intake": 60,
        "assessment": 240,
        "review": 120,
        "general": 480,
    }
    assert TASK.sla_rule("unheard-of").target_minutes == 480  # type: ignore[union-attr]
    # A lifecycle survives its own document (what entity workflows carry).
    assert parse_lifecycle(lifecycle_document(TASK)) == TASK


def test_custom_lifecycles_are_validated() -> None:
    found = problems_of(
        {
            "type": "ticket",
            "states": ["open", "stuck", "closed", "orphan"],
            "initial": "open",
            "terminal": ["closed"],
            "transitions": [
                {"from": "open", "to": "closed", "guard": "{{ entity.x == }}"},
                {"from": "open", "to": "nowhere"},
                {"from": "open", "to": "stuck", "guard": "{{ steps.a.output }}"},
                {"from": "closed", "to": "open", "permission": "FLY"},
            ],
        }
    )
    paths = dict(found)
    assert paths["$.transitions[0].guard"].startswith("syntax error")
    assert paths["$.transitions[1].to"] == "unknown state 'nowhere'"
    assert "unknown name 'steps'" in paths["$.transitions[2].guard"]
    assert ("$.transitions[3].from", "closed is terminal: nothing leaves it") in found
    assert "$.transitions[3].permission" in paths
    assert ("$.states", "state 'orphan' cannot be reached from 'open'") in found
    assert ("$.terminal", "state 'stuck' has no way out, so it must be listed as terminal") in found
    assert (
        dict(problems_of({**TICKET, "initial": "limbo"}))["$.initial"] == "'limbo' is not one of the states"
    )


def test_guards_permissions_and_ownership() -> None:
    ticket = parse_lifecycle(TICKET)
    operator = Actor.of_role("bob", "operator")
    low = {"severity": 1, "created_by": "bob"}
    rejected = check_transition(ticket, state="open", target="escalated", entity=low, actor=operator)
    assert rejected is not None and rejected.code == "INVALID_TRANSITION"
    assert rejected.details["guard"] == TICKET["transitions"][0]["guard"]
    assert (
        check_transition(
            ticket,
            state="open",
            target="escalated",
            entity=low,
            actor=operator,
            context={"reason": "customer asked"},
        )
        is None
    )
    assert (
        check_transition(ticket, state="open", target="escalated", entity={"severity": 4}, actor=operator)
        is None
    )
    viewer = check_transition(
        ticket, state="open", target="closed", entity=low, actor=Actor.of_role("v", "viewer")
    )
    assert viewer is not None and viewer.code == "PERMISSION_DENIED"
    # Tasks are the creator's, the assignee's and admins'.
    task = {"created_by": "bob", "assigned_to": "carol"}
    for name, role, allowed in [
        ("bob", "operator", True),
        ("carol", "operator", True),
        ("eve", "operator", False),
        ("root", "admin", True),
    ]:
        verdict = check_transition(
            TASK, state="new", target="in_progress", entity=task, actor=Actor.of_role(name, role)
        )
        assert (verdict is None) is allowed, name


def test_state_diagram() -> None:
    diagram = state_diagram(TASK)
    assert diagram.startswith("stateDiagram-v2\n    [*] --> new\n")
    assert "    new --> in_progress : Start work\n" in diagram
    assert "    completed --> [*]\n" in diagram and "    cancelled --> [*]\n" in diagram
    assert diagram.count("-->") == len(TASK.transitions) + 1 + len(TASK.terminal)


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker sharing one SQLite store (the worker's automations read it)."""
    settings = api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")
    async with running_api(settings) as http, conveyor_worker(client, settings):
        yield http


async def test_lifecycles_over_the_api(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/api/v1/lifecycles")).json()
    assert [lc["type"] for lc in listed["items"]][:2] == ["task", "action_plan"]
    assert "MANAGE_SLA" in listed["role_permissions"]["admin"] and listed["role_permissions"]["viewer"] == []
    task = (await api.get("/api/v1/lifecycles/task")).json()
    assert (
        task["initial"] == "new"
        and {"from_state": "new", "to_state": "blocked"}.items() <= task["transitions"][1].items()
    )
    mermaid = await api.get("/api/v1/lifecycles/action_plan", params={"format": "mermaid"})
    assert mermaid.headers["content-type"].startswith("text/plain")
    assert "draft --> active : Activate plan" in mermaid.text

    bad = await api.post("/api/v1/lifecycles", json={**TICKET, "initial": "limbo"})
    assert bad.status_code == 422 and bad.json()["error_code"] == "LIFECYCLE_INVALID"
    assert bad.json()["details"]["problems"][0]["path"] == "$.initial"
    kind = f"ticket{uuid.uuid4().hex[:6]}"
    made = await api.post("/api/v1/lifecycles", json={**TICKET, "type": kind})
    assert made.status_code == 201, made.text
    assert (await api.post("/api/v1/lifecycles", json={**TICKET, "type": kind})).status_code == 409
    assert (await api.post("/api/v1/lifecycles", json={**TICKET, "type": "task"})).status_code == 409

    missing = await api.post(f"/api/v1/entities/{kind}", json={"severity": "high", "colour": "red"})
    assert missing.status_code == 422
    problems = {p["path"]: p["message"] for p in missing.json()["details"]["problems"]}
    assert problems == {
        "$.title": "required",
        "$.severity": "must be an integer",
        "$.colour": f"not a field of {kind}",
    }
    wrong = await api.post("/api/v1/entities/task", json={"title": "x", "priority": "urgent"})
    assert wrong.status_code == 422
    assert wrong.json()["details"]["problems"] == [
        {"path": "$.priority", "message": "one of low, medium, high, critical"}
    ]
    ticket = (await api.post(f"/api/v1/entities/{kind}", json={"title": "printer"})).json()
    assert ticket["state"] == "open" and ticket["data"]["severity"] == 1
    url = f"/api/v1/entities/{kind}/{ticket['id']}/transitions"
    guarded = await api.post(url, json={"target_state": "escalated"})
    assert guarded.status_code == 400 and guarded.json()["error_code"] == "INVALID_TRANSITION"
    passed = await api.post(url, json={"target_state": "escalated", "context": {"reason": "customer asked"}})
    assert passed.status_code == 200 and passed.json()["state"] == "escalated"
    read = (await api.get(f"/api/v1/entities/{kind}/{ticket['id']}")).json()
    assert read["allowed_transitions"] == ["closed"] and not read["terminal"]
    assert (await api.get(f"/api/v1/entities/{kind}/nope")).status_code == 404


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parent.parent / "examples" / "lifecycles").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_example_lifecycles_are_valid(path: Path) -> None:
    lifecycle = parse_lifecycle(yaml.safe_load(path.read_text()))
    assert lifecycle.states and lifecycle.transitions
