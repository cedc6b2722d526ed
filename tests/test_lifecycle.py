"""Execution lifecycle: the enforced state table, park-on-failure, operator control, CLI parity, bulk."""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from tests.support.run import start
from tests.support.target import Target
from worker import conveyor_worker
from workflows.states import TRANSITIONS, ExecutionState, IllegalTransition, check_transition

TEMPORAL = Path(sys.executable).parent / "temporal"


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(ExecutionState, ExecutionState)), ids=lambda s: s.value
)
def test_every_pair_of_states_is_legal_or_rejected(current: ExecutionState, target: ExecutionState) -> None:
    if target in TRANSITIONS[current]:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_the_table_is_the_documented_one() -> None:
    legal = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert legal == {
        ("CREATED", "QUEUED"),
        ("QUEUED", "PROCESSING"), ("QUEUED", "CANCELLED"),
        ("PROCESSING", "COMPLETED"), ("PROCESSING", "FAILED"), ("PROCESSING", "WAITING"),
        ("PROCESSING", "CANCELLED"), ("PROCESSING", "SUSPENDED"),
        ("WAITING", "PROCESSING"), ("WAITING", "CANCELLED"),
        ("FAILED", "RETRYING"), ("FAILED", "SUSPENDED"),
        ("RETRYING", "QUEUED"),
        ("SUSPENDED", "QUEUED"), ("SUSPENDED", "CANCELLED"),
    }  # fmt: skip


def _gated(name: str, gate_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "input": {"type": "object", "properties": {"url": {"type": "string"}, "n": {"type": "integer"}}},
        "steps": [
            {"id": "first", "type": "transform", "with": {"value": "{{ input.n | default(1) }}"}},
            {
                "id": "call",
                "type": "http_request",
                "with": {"url": "{{ input.url | default('" + gate_url + "') }}"},
            },
            {"id": "after", "type": "transform", "with": {"value": "{{ steps.call.output.body }}"}},
        ],
        "on_error": [{"id": "cleanup", "type": "set", "with": {"cleaned": True}}],
    }


async def _until(api: httpx.AsyncClient, execution_id: str, state: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(200):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view.get("state") == state:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never reached {state}: {view}")


async def _history_length(client: Client, execution_id: str) -> int:
    return len((await client.get_workflow_handle(execution_id).fetch_history()).events)


async def test_data_error_parks_then_retry_with_input_patch_completes(
    api: httpx.AsyncClient, client: Client, target: Target
) -> None:
    gate = f"g-{uuid.uuid4().hex[:8]}"
    await api.post("/api/v1/definitions", json=_gated("parked", f"{target.url}/gate/{gate}"))
    started = (await api.post("/api/v1/definitions/parked/executions", json={"input": {"n": 3}})).json()
    execution_id = started["execution_id"]
    view = await _until(api, execution_id, "SUSPENDED")
    assert {s["id"]: s["status"] for s in view["steps"]}["call"] == "failed"
    assert view["error"]["code"] == "HttpClientError"

    # A request that does not fit is rejected and leaves no trace in the history.
    before = await _history_length(client, execution_id)
    wrong = await api.post(f"/api/v1/executions/{execution_id}/retry", json={"from_step": "nope"})
    assert wrong.status_code == 422
    bad_patch = await api.post(f"/api/v1/executions/{execution_id}/retry", json={"input_patch": {"n": "x"}})
    assert bad_patch.status_code == 422 and bad_patch.json()["details"]["problems"][0]["path"] == "$.input.n"
    not_suspended = await api.post(f"/api/v1/executions/{execution_id}/resume")
    assert not_suspended.status_code == 409
    assert await _history_length(client, execution_id) == before

    retried = await api.post(
        f"/api/v1/executions/{execution_id}/retry",
        json={"input_patch": {"url": f"{target.url}/echo?fixed=1"}},
    )
    assert retried.status_code == 200, retried.text
    await client.get_workflow_handle(execution_id).result()
    view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert view["state"] == "COMPLETED"
    assert view["input"]["url"].endswith("fixed=1")
    assert view["output"]["query"] == {"fixed": "1"}
    history = (await api.get(f"/api/v1/executions/{execution_id}/history")).json()
    assert [t["to_state"] for t in history] == [
        "QUEUED", "PROCESSING", "FAILED", "SUSPENDED", "QUEUED", "PROCESSING", "COMPLETED"
    ]  # fmt: skip
    assert history[4]["actor"] == "developer (auth off)"
    again = await api.post(f"/api/v1/executions/{execution_id}/skip", json={"output": 1})
    assert again.status_code == 409 and again.json()["error_code"] == "INVALID_STATE"


async def test_skip_completes_with_the_given_output(
    api: httpx.AsyncClient, client: Client, target: Target
) -> None:
    await api.post(
        "/api/v1/definitions", json=_gated("skipped", f"{target.url}/gate/closed-{uuid.uuid4().hex}")
    )
    execution_id = (await api.post("/api/v1/definitions/skipped/executions", json={})).json()["execution_id"]
    await _until(api, execution_id, "SUSPENDED")
    skipped = await api.post(
        f"/api/v1/executions/{execution_id}/skip", json={"output": {"body": {"manual": True}}}
    )
    assert skipped.status_code == 200, skipped.text
    await client.get_workflow_handle(execution_id).result()
    view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert view["state"] == "COMPLETED"
    assert {s["id"]: s["status"] for s in view["steps"]}["call"] == "skipped"
    assert view["output"] == {"manual": True}


async def test_retry_from_an_earlier_step_runs_it_again(
    api: httpx.AsyncClient, client: Client, target: Target
) -> None:
    gate = f"g-{uuid.uuid4().hex[:8]}"
    await api.post("/api/v1/definitions", json=_gated("rewind", f"{target.url}/gate/{gate}"))
    execution_id = (await api.post("/api/v1/definitions/rewind/executions", json={"input": {"n": 1}})).json()[
        "execution_id"
    ]
    await _until(api, execution_id, "SUSPENDED")
    target.gates[gate] = True
    answer = await api.post(
        f"/api/v1/executions/{execution_id}/retry", json={"from_step": "first", "input_patch": {"n": 7}}
    )
    assert answer.status_code == 200
    result = await client.get_workflow_handle(execution_id).result()
    assert {s["id"]: s["status"] for s in result["steps"]} == {
        "first": "completed", "call": "completed", "after": "completed", "cleanup": "skipped"
    }  # fmt: skip


async def test_suspend_and_resume_at_a_step_boundary(api: httpx.AsyncClient, client: Client) -> None:
    document = {
        "name": "pausable",
        "steps": [
            {"id": "nap", "type": "delay", "with": {"duration": "1s"}},
            {"id": "work", "type": "transform", "with": {"value": 42}},
        ],
    }
    await api.post("/api/v1/definitions", json=document)
    execution_id = (await api.post("/api/v1/definitions/pausable/executions", json={})).json()["execution_id"]
    await _until(api, execution_id, "PROCESSING")
    suspended = await api.post(f"/api/v1/executions/{execution_id}/suspend", json={"reason": "maintenance"})
    assert suspended.status_code == 200, suspended.text
    twice = await api.post(f"/api/v1/executions/{execution_id}/suspend")
    assert twice.status_code == 409
    view = await _until(api, execution_id, "SUSPENDED")
    assert {s["id"]: s["status"] for s in view["steps"]} == {"nap": "completed", "work": "pending"}
    assert (await api.post(f"/api/v1/executions/{execution_id}/retry")).status_code == 409  # not a failure
    assert (await api.post(f"/api/v1/executions/{execution_id}/resume")).status_code == 200
    result = await client.get_workflow_handle(execution_id).result()
    assert result["state"] == "COMPLETED" and result["output"] == 42
    history = (await api.get(f"/api/v1/executions/{execution_id}/history")).json()
    assert [t["to_state"] for t in history][-4:] == ["SUSPENDED", "QUEUED", "PROCESSING", "COMPLETED"]
    assert history[-4]["reason"] == "maintenance"


async def test_failing_for_good_when_the_definition_says_so(api: httpx.AsyncClient, target: Target) -> None:
    document = {
        **_gated("no-park", f"{target.url}/gate/never-{uuid.uuid4().hex}"),
        "failure": {"suspend": False},
    }
    await api.post("/api/v1/definitions", json=document)
    execution_id = (await api.post("/api/v1/definitions/no-park/executions", json={})).json()["execution_id"]
    view = await _until(api, execution_id, "FAILED")
    assert {s["id"]: s["status"] for s in view["steps"]}["cleanup"] == "completed"
    bad = await api.post(f"/api/v1/executions/{execution_id}/retry", json={"input_patch": {"n": "x"}})
    assert bad.status_code == 422 and bad.json()["details"]["problems"][0]["path"] == "$.input.n"
    closed = await api.post(f"/api/v1/executions/{execution_id}/retry")
    assert closed.status_code == 200  # a closed execution runs again as a new run
    for _ in range(200):
        rerun = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if rerun["run_id"] != view["run_id"] and rerun["state"] == "FAILED":
            break
        await asyncio.sleep(0.05)
    assert rerun["run_id"] != view["run_id"] and rerun["state"] == "FAILED"


async def test_temporal_cli_cancel_and_signal_match_the_api(
    api: httpx.AsyncClient, temporal_env: WorkflowEnvironment
) -> None:
    document = {
        "name": "cli-parity",
        "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
        "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
    }
    await api.post("/api/v1/definitions", json=document)
    execution_id = (await api.post("/api/v1/definitions/cli-parity/executions", json={})).json()[
        "execution_id"
    ]
    await _until(api, execution_id, "PROCESSING")
    address = temporal_env.client.service_client.config.target_host

    async def cli(*args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            str(TEMPORAL), "workflow", *args, "--address", address, "-w", execution_id,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()

    await cli("signal", "--name", "approve", "--input", '{"ok": true}')
    for _ in range(100):
        logs = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        describe = await temporal_env.client.get_workflow_handle(execution_id).query("logs")
        if any("signal approve" in entry["message"] for entry in describe):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the signal never showed: {logs}")
    await cli("cancel")
    view = await _until(api, execution_id, "CANCELLED")
    assert {s["id"]: s["status"] for s in view["steps"]} == {"nap": "cancelled", "tidy": "completed"}


async def test_bulk_retry_of_200_suspended_executions(
    api: httpx.AsyncClient, client: Client, target: Target
) -> None:
    gate = f"bulk-{uuid.uuid4().hex[:8]}"
    name = f"bulk-{uuid.uuid4().hex[:6]}"
    await api.post("/api/v1/definitions", json=_gated(name, f"{target.url}/gate/{gate}"))
    starts = await asyncio.gather(
        *(api.post(f"/api/v1/definitions/{name}/executions", json={}) for _ in range(200))
    )
    ids = {answer.json()["execution_id"] for answer in starts}
    assert len(ids) == 200
    body = {"filter": {"definition": name, "state": "SUSPENDED"}, "dry_run": True}
    for _ in range(300):  # every execution parks, and visibility catches up
        dry = (await api.post("/api/v1/executions/bulk/retry", json=body)).json()
        if dry["matched"] == 200:
            break
        await asyncio.sleep(0.1)
    assert dry["matched"] == 200 and dry["succeeded"] == 0
    target.gates[gate] = True
    report = (await api.post("/api/v1/executions/bulk/retry", json={**body, "dry_run": False})).json()
    assert report["matched"] == 200 and report["succeeded"] == 200 and report["failed"] == []
    results = await asyncio.gather(*(client.get_workflow_handle(i).result() for i in ids))
    assert {r["state"] for r in results} == {"COMPLETED"}
    assert (await api.post("/api/v1/executions/bulk/explode", json=body)).status_code == 422


async def test_system_errors_retry_the_execution_after_60s_under_time_skipping(
    skipping_env: WorkflowEnvironment, settings: Settings, target: Target
) -> None:
    key = f"sys-{uuid.uuid4().hex[:8]}"
    document = {
        "name": "system-retry",
        "failure": {"retries": ["60s", "120s"]},
        "steps": [
            {
                "id": "call",
                "type": "http_request",
                "retry": {"max_attempts": 1},
                "with": {"url": f"{target.url}/flaky/{key}/2"},
            }
        ],
    }
    async with conveyor_worker(skipping_env.client, settings, task_queue=f"skip-{uuid.uuid4()}") as running:
        handle = await start(skipping_env.client, running.task_queue, document)
        result = await handle.result()
        history = await handle.query("history")
    assert result.state == "COMPLETED"
    assert target.counts[key] == 3
    states = [t["to_state"] for t in history]
    assert states.count("RETRYING") == 2 and states[-1] == "COMPLETED"
