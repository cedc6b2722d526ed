"""Executions through the real API on the real dev server: start, idempotency, wait, get, list, cancel."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

from core import names

GREETER = {
    "name": "greeter",
    "input": {
        "type": "object",
        "required": ["who"],
        "properties": {"who": {"type": "string"}, "times": {"type": "integer", "default": 2}},
    },
    "steps": [
        {
            "id": "greet",
            "type": "transform",
            "with": {"value": "{{ ('hi ' ~ input.who ~ ' ') * input.times }}"},
        },
        {"id": "size", "type": "transform", "with": {"value": "{{ steps.greet.output | length }}"}},
    ],
    "output": {"greeting": "{{ steps.greet.output }}", "size": "{{ steps.size.output }}"},
}

SLEEPER = {
    "name": "sleeper",
    "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
    "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
}


async def _create(api: httpx.AsyncClient, document: dict[str, object]) -> None:
    answer = await api.post("/api/v1/definitions", json=document)
    assert answer.status_code in (200, 201), answer.text


async def test_start_wait_and_get(api: httpx.AsyncClient, client: Client) -> None:
    await _create(api, GREETER)
    started = await api.post(
        "/api/v1/definitions/greeter/executions", json={"input": {"who": "ada"}, "wait": 20}
    )
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["state"] == "COMPLETED"
    assert body["output"] == {"greeting": "hi ada hi ada ", "size": 14}
    assert body["execution_id"].startswith("greeter/") and body["version"] == 1

    view = (await api.get(f"/api/v1/executions/{body['execution_id']}")).json()
    assert view["state"] == "COMPLETED" and view["temporal_status"] == "COMPLETED"
    assert view["input"] == {"who": "ada", "times": 2}  # the schema's default was filled in
    assert [(s["id"], s["status"]) for s in view["steps"]] == [("greet", "completed"), ("size", "completed")]
    assert view["output"]["size"] == 14

    history = (await api.get(f"/api/v1/executions/{body['execution_id']}/history")).json()
    assert [(t["from_state"], t["to_state"]) for t in history] == [
        ("CREATED", "QUEUED"),
        ("QUEUED", "PROCESSING"),
        ("PROCESSING", "COMPLETED"),
    ]
    description = await client.get_workflow_handle(body["execution_id"]).describe()
    assert description.typed_search_attributes.get(names.SA_STATE) == "COMPLETED"
    assert description.typed_search_attributes.get(names.SA_DEFINITION) == "greeter"


async def test_same_id_twice_is_one_execution(api: httpx.AsyncClient, client: Client) -> None:
    await _create(api, GREETER)
    key = f"order-{uuid.uuid4()}"
    request = {"input": {"who": "bob"}, "id": key}
    answers = await asyncio.gather(
        *(api.post("/api/v1/definitions/greeter/executions", json=request) for _ in range(5))
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    ids = {a.json()["execution_id"] for a in answers}
    assert ids == {f"greeter/{key}"}
    await client.get_workflow_handle(f"greeter/{key}").result()
    again = await api.post("/api/v1/definitions/greeter/executions", json=request)
    assert again.status_code == 200 and again.json()["state"] == "COMPLETED"
    runs = [w async for w in client.list_workflows(f"WorkflowId = 'greeter/{key}'")]
    assert len(runs) == 1


async def test_input_is_checked_against_the_schema(api: httpx.AsyncClient) -> None:
    await _create(api, GREETER)
    bad = await api.post("/api/v1/definitions/greeter/executions", json={"input": {"times": "x"}})
    assert bad.status_code == 422
    body = bad.json()
    assert body["error_code"] == "INPUT_INVALID"
    assert {p["path"] for p in body["details"]["problems"]} == {"$.input", "$.input.times"}
    assert (await api.post("/api/v1/definitions/ghost/executions", json={})).status_code == 404
    bad_id = await api.post(
        "/api/v1/definitions/greeter/executions", json={"input": {"who": "x"}, "id": "a/b"}
    )
    assert bad_id.status_code == 400 and bad_id.json()["details"] == {"field": "id"}
    assert (
        await api.post("/api/v1/definitions/greeter/executions", json={"input": {"who": "x"}, "version": 9})
    ).status_code == 404


async def test_publish_v2_leaves_a_waiting_v1_execution_on_v1(api: httpx.AsyncClient, client: Client) -> None:
    v1 = {
        "name": "pinned",
        "steps": [
            {"id": "nap", "type": "delay", "with": {"duration": "2s"}},
            {"id": "which", "type": "transform", "with": {"value": "one"}},
        ],
    }
    await _create(api, v1)
    started = (await api.post("/api/v1/definitions/pinned/executions", json={})).json()
    v2 = {**v1, "steps": [v1["steps"][0], {"id": "which", "type": "transform", "with": {"value": "two"}}]}
    saved = (await api.post("/api/v1/definitions?publish=true", json=v2)).json()
    assert saved["version"] == 2 and saved["status"] == "published"
    await client.get_workflow_handle(started["execution_id"]).result()
    view = (await api.get(f"/api/v1/executions/{started['execution_id']}")).json()
    assert view["version"] == 1 and view["output"] == "one"
    fresh = (await api.post("/api/v1/definitions/pinned/executions", json={"wait": 20})).json()
    assert fresh["version"] == 2 and fresh["output"] == "two"


async def test_cancel_runs_cleanup_and_shows_cancelled(api: httpx.AsyncClient, client: Client) -> None:
    await _create(api, SLEEPER)
    started = (await api.post("/api/v1/definitions/sleeper/executions", json={})).json()
    execution_id = started["execution_id"]
    for _ in range(100):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["current_step"] == "nap":
            break
        await asyncio.sleep(0.05)
    assert view["state"] == "PROCESSING"
    cancelled = await api.post(f"/api/v1/executions/{execution_id}/cancel")
    assert cancelled.status_code == 202
    for _ in range(100):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["closed_at"]:
            break
        await asyncio.sleep(0.05)
    assert view["state"] == "CANCELLED"
    steps = {s["id"]: s["status"] for s in view["steps"]}
    assert steps == {"nap": "cancelled", "tidy": "completed"}
    again = await api.post(f"/api/v1/executions/{execution_id}/cancel")
    assert again.status_code == 409 and again.json()["error_code"] == "EXECUTION_CLOSED"
    assert (await api.get("/api/v1/executions/sleeper/does-not-exist")).status_code == 404


async def test_list_filters_through_visibility(api: httpx.AsyncClient) -> None:
    await _create(api, GREETER)
    ids = set()
    for who in ("a", "b", "c"):
        ids.add(
            (
                await api.post(
                    "/api/v1/definitions/greeter/executions", json={"input": {"who": who}, "wait": 20}
                )
            ).json()["execution_id"]
        )
    found: set[str] = set()
    for _ in range(50):  # visibility is eventually consistent
        page = (await api.get("/api/v1/executions?definition=greeter&state=COMPLETED&limit=100")).json()
        found = {row["execution_id"] for row in page["executions"]}
        if ids <= found:
            break
        await asyncio.sleep(0.1)
    assert ids <= found
    first = (await api.get("/api/v1/executions?definition=greeter&limit=1")).json()
    assert len(first["executions"]) == 1 and first["next_page_token"]
    second = (
        await api.get(f"/api/v1/executions?definition=greeter&limit=1&page_token={first['next_page_token']}")
    ).json()
    assert second["executions"][0]["execution_id"] != first["executions"][0]["execution_id"]
    assert (await api.get("/api/v1/executions?page_token=%%%")).status_code == 400


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "order-approval-routing.yaml"


async def test_an_example_runs_end_to_end_through_the_api(api: httpx.AsyncClient) -> None:
    saved = await api.post(
        "/api/v1/definitions", content=EXAMPLE.read_bytes(), headers={"content-type": "application/yaml"}
    )
    assert saved.status_code == 201, saved.text
    started = await api.post(
        "/api/v1/definitions/order-approval-routing/executions",
        json={"input": {"order_id": "A-7", "total": 25000}},
    )
    execution_id = started.json()["execution_id"]
    view: dict[str, object] = {}
    for _ in range(200):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["state"] == "COMPLETED":
            break
        await asyncio.sleep(0.05)
    assert view["state"] == "COMPLETED"
    output = view["output"]
    assert isinstance(output, dict) and output["order_id"] == "A-7" and output["route"] == "finance"


async def test_the_api_acts_only_on_conveyor_executions(api: httpx.AsyncClient, client: Client) -> None:
    other = await client.start_workflow(
        "SomebodyElsesWorkflow", id=f"lane/x/{uuid.uuid4()}", task_queue="nobody-polls"
    )
    try:
        for call in (
            api.get(f"/api/v1/executions/{other.id}"),
            api.post(f"/api/v1/executions/{other.id}/cancel"),
            api.post(f"/api/v1/executions/{other.id}/signals/lane-release", json={"payload": {}}),
        ):
            answer = await call
            assert answer.status_code == 404 and answer.json()["error_code"] == "EXECUTION_NOT_FOUND"
    finally:
        await other.terminate("test over")
