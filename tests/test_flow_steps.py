"""validate, transform operations, foreach, parallel, wait and sub_workflow on the real dev server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.outcome import completes, fails, failure_of, statuses
from tests.support.run import start
from tests.support.target import Target
from worker import conveyor_worker
from workflows.definition import DefinitionInvalid, parse

PRODUCTS = [
    {"sku": " a-1 ", "name": "Lamp", "cost_price": "12,50", "category": "home", "stock": 3},
    {"sku": "b-2", "name": "Desk", "cost_price": "120", "category": "office", "stock": 0},
    {"sku": "", "name": "Chair", "cost_price": "45.5", "category": "office", "stock": 9},
]


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": f"flow-{uuid.uuid4().hex[:8]}", "steps": list(steps), **fields}


async def test_transform_operations_in_order(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "clean",
                "type": "transform",
                "with": {
                    "items": "{{ input.products }}",
                    "filter": "{{ item.stock > 0 }}",
                    "fields": {"title": "name", "price": "cost_price", "sku": "sku", "category": "category"},
                    "normalize": {"sku": ["trim", "upper"], "price": "number"},
                },
            },
            {
                "id": "priced",
                "type": "transform",
                "with": {
                    "items": "{{ steps.clean.output }}",
                    "map": {"sku": "{{ item.sku }}", "n": "{{ index }}"},
                },
            },
            {
                "id": "totals",
                "type": "transform",
                "with": {
                    "items": "{{ steps.clean.output }}",
                    "aggregate": {
                        "group_by": "category",
                        "metrics": {"sum": {"sum": "price"}, "n": {"count": True}, "top": {"max": "price"}},
                    },
                },
            },
            output={
                "clean": "{{ steps.clean.output }}",
                "priced": "{{ steps.priced.output }}",
                "totals": "{{ steps.totals.output }}",
            },
        ),
        {"products": PRODUCTS},
    )
    assert result.output["clean"] == [
        {"title": "Lamp", "price": 12.5, "sku": "A-1", "category": "home"},
        {"title": "Chair", "price": 45.5, "sku": "", "category": "office"},
    ]
    assert result.output["priced"] == [{"sku": "A-1", "n": 0}, {"sku": "", "n": 1}]
    assert result.output["totals"] == [
        {"category": "home", "sum": 12.5, "n": 1, "top": 12.5},
        {"category": "office", "sum": 45.5, "n": 1, "top": 45.5},
    ]


async def test_validate_splits_items_and_can_fail(client: Client, worker: Worker) -> None:
    rules = [
        {"rule": "required", "field": "sku"},
        {"rule": "pattern", "field": "sku", "pattern": "^[a-z]-\\d$"},
        {"rule": "type", "field": "stock", "type": "integer"},
        {"rule": "min", "field": "stock", "value": 1, "message": "out of stock"},
        {"rule": "one_of", "field": "category", "values": ["home", "office"]},
        {"rule": "json_schema", "schema": {"type": "object", "required": ["name"]}},
    ]
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {"id": "check", "type": "validate", "with": {"items": "{{ input.products }}", "rules": rules}}
        ),
        {"products": PRODUCTS},
    )
    output = result.output
    assert [item["name"] for item in output["valid"]] == []
    assert [entry["index"] for entry in output["invalid"]] == [0, 1, 2]
    assert output["invalid"][1]["errors"] == ["out of stock"]
    assert {"index": 2, "field": "sku", "rule": "required", "message": "sku is required"} in output["errors"]

    one = await completes(
        client,
        worker.task_queue,
        definition(
            {"id": "check", "type": "validate", "with": {"items": {"sku": "a-1"}, "rules": rules[:2]}}
        ),
    )
    assert one.output["valid"] == [{"sku": "a-1"}]

    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {
                "id": "check",
                "type": "validate",
                "with": {"items": "{{ input.products }}", "rules": rules[:1], "fail_on_invalid": True},
            }
        ),
        {"products": PRODUCTS},
    )
    assert failure.type == "ValidationFailed" and "1 invalid item" in failure.error["message"]


def test_bad_flow_steps_are_rejected_at_validation() -> None:
    bad = definition(
        {
            "id": "v",
            "type": "validate",
            "with": {"items": [], "rules": [{"rule": "pattern", "field": "x", "pattern": "("}]},
        },
        {"id": "t", "type": "transform", "with": {"items": [], "normalize": {"x": ["shout"]}}},
        {"id": "f", "type": "foreach", "items": "{{ input.list }}"},
        {"id": "w", "type": "wait", "with": {"event": "retry"}},
        {"id": "s", "type": "sub_workflow", "with": {"definition": "{{ input.name }}"}},
        {"id": "p", "type": "parallel", "cases": []},
    )
    with pytest.raises(DefinitionInvalid) as caught:
        parse(bad)
    paths = {p.path for p in caught.value.problems}
    assert {
        "$.steps[0].with.rules[0]",
        "$.steps[1].with",
        "$.steps[2].steps",
        "$.steps[3].with",
        "$.steps[4].with.definition",
        "$.steps[5].cases",
        "$.steps[5].branches",
    } <= paths


async def test_foreach_in_order_with_item_failures(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "each",
                "type": "foreach",
                "items": "{{ input.codes }}",
                "parallelism": 3,
                "on_item_error": "continue",
                "steps": [
                    {
                        "id": "call",
                        "type": "http_request",
                        "with": {"url": f"{target.url}/status/{{{{ item }}}}"},
                        "retry": {"max_attempts": 1},
                    },
                    {
                        "id": "mark",
                        "type": "transform",
                        "with": {"value": "{{ index }}:{{ steps.call.output.status }}"},
                    },
                ],
            },
        ),
        {"codes": [200, 201, 404, 202]},
    )
    output = result.output
    assert output["results"] == ["0:200", "1:201", None, "3:202"]
    assert output["failed"] == [
        {"index": 2, "error": {"code": "HttpClientError", "message": "client error 404", "step": "call"}}
    ]
    assert statuses(result) == {"each": "completed"}


async def test_foreach_fails_fast_by_default(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {
                "id": "each",
                "type": "foreach",
                "items": [1, 0, 2],
                "parallelism": 1,
                "steps": [{"id": "inv", "type": "transform", "with": {"value": "{{ 10 / item }}"}}],
            }
        ),
    )
    assert failure.type == "ExpressionFailed" and failure.error["step"] == "inv"


async def test_a_long_foreach_runs_in_child_batches(client: Client, worker: Worker) -> None:
    items = list(range(250))
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "base", "type": "set", "with": {"offset": 1000}},
            {
                "id": "each",
                "type": "foreach",
                "items": "{{ input.items }}",
                "parallelism": 50,
                "batch_size": 100,
                "steps": [
                    {
                        "id": "add",
                        "type": "transform",
                        "with": {"value": "{{ item + vars.offset + input.k }}"},
                    }
                ],
            },
        ),
        {"items": items, "k": 1},
    )
    result = await handle.result()
    assert result.output["results"] == [i + 1001 for i in items]
    children = [w async for w in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}/each/batch-'")]
    assert len(children) == 3 or len(children) == 0  # visibility may lag; the history below is exact
    history = await handle.fetch_history()
    assert (
        sum(
            1
            for e in history.events
            if e.HasField("start_child_workflow_execution_initiated_event_attributes")
        )
        == 3
    )
    assert len(history.events) < 100


async def test_parallel_branches(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "both",
                "type": "parallel",
                "branches": {
                    "left": [
                        {"id": "l1", "type": "transform", "with": {"value": 1}},
                        {"id": "l2", "type": "transform", "with": {"value": "{{ steps.l1.output + 1 }}"}},
                    ],
                    "right": [
                        {"id": "r1", "type": "delay", "with": {"duration": "100ms"}},
                        {"id": "r2", "type": "transform", "with": {"value": "r"}},
                    ],
                },
            }
        ),
    )
    assert result.output == {"left": 2, "right": "r"}

    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {
                "id": "both",
                "type": "parallel",
                "branches": {
                    "boom": [{"id": "b", "type": "fail", "with": {"message": "no"}}],
                    "slow": [{"id": "s", "type": "delay", "with": {"duration": "1h"}}],
                },
            }
        ),
    )
    assert failure.statuses()["s"] == "cancelled" and "boom" in failure.error["message"]


async def test_wait_for_a_signal_and_an_update_with_schema(client: Client, worker: Worker) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "approval",
                "type": "wait",
                "with": {
                    "event": "approve",
                    "schema": {
                        "type": "object",
                        "required": ["by"],
                        "properties": {"by": {"type": "string"}},
                    },
                },
            },
            {
                "id": "after",
                "type": "transform",
                "with": {"value": "approved by {{ steps.approval.output.by }}"},
            },
        ),
    )
    for _ in range(100):
        if (await handle.query("describe"))["state"] == "WAITING":
            break
        await asyncio.sleep(0.05)
    before = len((await handle.fetch_history()).events)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("approve", {"by": 7})
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("reject", {"by": "x"})  # nothing waits for it
    assert len((await handle.fetch_history()).events) == before  # rejected before it was recorded
    assert await handle.execute_update("approve", {"by": "ada"}) == {"accepted": True, "event": "approve"}
    result = await handle.result()
    assert result.output == "approved by ada"
    transitions = [t["to_state"] for t in await handle.query("history")]
    assert transitions == ["QUEUED", "PROCESSING", "WAITING", "PROCESSING", "COMPLETED"]

    signalled = await start(
        client,
        worker.task_queue,
        definition({"id": "gate", "type": "wait", "with": {"event": "go"}}),
    )
    await signalled.signal("go", {"n": 1})
    assert (await signalled.result()).output == {"n": 1}


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "timed-out"])
async def test_a_seven_day_wait_under_time_skipping(
    skipping_env: WorkflowEnvironment, settings: Settings, approve: bool
) -> None:
    document = definition(
        {
            "id": "approval",
            "type": "wait",
            "with": {"event": "approve", "timeout": "7d", "default": {"by": "nobody"}},
            "on_timeout": "continue",
        },
        {"id": "after", "type": "transform", "with": {"value": "{{ steps.approval.output.by }}"}},
    )
    async with conveyor_worker(skipping_env.client, settings, task_queue=f"skip-{uuid.uuid4()}") as running:
        handle = await start(skipping_env.client, running.task_queue, document)
        if approve:
            await skipping_env.sleep(6 * 86400)  # six days pass; then someone approves
            await handle.signal("approve", {"by": "ada"})
        result = await handle.result()
    assert result.output == ("ada" if approve else "nobody")


async def test_sub_workflow_through_the_api(api: httpx.AsyncClient, client: Client) -> None:
    child = {
        "name": "child-calc",
        "input": {"type": "object"},
        "steps": [{"id": "twice", "type": "transform", "with": {"value": "{{ input.n * 2 }}"}}],
    }
    parent = {
        "name": "parent-calc",
        "steps": [
            {
                "id": "call",
                "type": "sub_workflow",
                "with": {"definition": "child-calc", "input": {"n": "{{ input.n }}"}},
            },
            {"id": "plus", "type": "transform", "with": {"value": "{{ steps.call.output + 1 }}"}},
        ],
    }
    missing = await api.post("/api/v1/definitions", json=parent)
    assert missing.status_code == 201
    refused = await api.post("/api/v1/definitions/parent-calc/executions", json={"input": {"n": 1}})
    assert refused.status_code == 409 and refused.json()["error_code"] == "SUB_WORKFLOW_UNAVAILABLE"
    await api.post("/api/v1/definitions", json=child)
    started = await api.post(
        "/api/v1/definitions/parent-calc/executions", json={"input": {"n": 20}, "wait": 20}
    )
    assert started.json()["output"] == 41, started.text

    sleepy = {"name": "child-sleepy", "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}]}
    waiter = {
        "name": "parent-waits",
        "steps": [{"id": "call", "type": "sub_workflow", "with": {"definition": "child-sleepy"}}],
    }
    await api.post("/api/v1/definitions", json=sleepy)
    await api.post("/api/v1/definitions", json=waiter)
    execution_id = (await api.post("/api/v1/definitions/parent-waits/executions", json={})).json()[
        "execution_id"
    ]
    child_handle = client.get_workflow_handle(f"{execution_id}/call")
    for _ in range(100):
        try:
            await child_handle.describe()
            break
        except Exception:
            await asyncio.sleep(0.05)
    await api.post(f"/api/v1/executions/{execution_id}/cancel")
    child_status = None
    for _ in range(100):
        child_status = (await child_handle.describe()).status
        if child_status is not None and child_status.name == "CANCELED":
            break
        await asyncio.sleep(0.05)
    assert child_status is not None and child_status.name == "CANCELED"


async def test_an_approval_through_the_api(api: httpx.AsyncClient, client: Client) -> None:
    document = {
        "name": "needs-approval",
        "steps": [
            {
                "id": "approval",
                "type": "wait",
                "with": {"event": "approve", "schema": {"type": "object", "required": ["by"]}},
            },
            {"id": "done", "type": "transform", "with": {"value": "{{ steps.approval.output.by }}"}},
        ],
    }
    await api.post("/api/v1/definitions", json=document)
    execution_id = (await api.post("/api/v1/definitions/needs-approval/executions", json={})).json()[
        "execution_id"
    ]
    for _ in range(100):
        if (await api.get(f"/api/v1/executions/{execution_id}")).json()["state"] == "WAITING":
            break
        await asyncio.sleep(0.05)
    wrong = await api.post(
        f"/api/v1/executions/{execution_id}/updates/approve", json={"payload": {"who": "x"}}
    )
    assert wrong.status_code == 422 and wrong.json()["details"]["problems"][0]["path"] == "$.payload"
    unknown = await api.post(f"/api/v1/executions/{execution_id}/updates/reject", json={"payload": {}})
    assert unknown.status_code == 409
    ok = await api.post(f"/api/v1/executions/{execution_id}/updates/approve", json={"payload": {"by": "ada"}})
    assert ok.status_code == 200, ok.text
    result = await client.get_workflow_handle(execution_id).result()
    assert result["output"] == "ada"


async def test_nested_long_loops_start_distinct_children(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "outer",
                "type": "foreach",
                "items": [10, 20],
                "parallelism": 2,
                "steps": [
                    {
                        "id": "inner",
                        "type": "foreach",
                        "items": [1, 2, 3],
                        "batch_size": 2,
                        "parallelism": 2,
                        "steps": [{"id": "sum", "type": "transform", "with": {"value": "{{ item }}"}}],
                    }
                ],
            }
        ),
    )
    assert [r["results"] for r in result.output["results"]] == [[1, 2, 3], [1, 2, 3]]


async def test_a_failure_while_a_branch_is_paused_still_ends_the_run(
    client: Client, worker: Worker, target: Target
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "both",
                "type": "parallel",
                "branches": {
                    "boom": [
                        {
                            "id": "slow",
                            "type": "http_request",
                            "timeout": "700ms",
                            "retry": {"max_attempts": 1},
                            "with": {"url": f"{target.url}/slow?seconds=3"},
                        }
                    ],
                    "idle": [
                        {"id": "short", "type": "delay", "with": {"duration": "100ms"}},
                        {"id": "next", "type": "transform", "with": {"value": 1}},
                    ],
                },
            }
        ),
    )
    for _ in range(100):
        if (await handle.query("describe"))["state"] == "PROCESSING":
            break
        await asyncio.sleep(0.02)
    # The idle branch parks at its next step while the slow call is still running, and then fails.
    await handle.execute_update("suspend", {"reason": "pause"})
    failure = await failure_of(handle)
    assert failure.error["code"] == "StepTimeout"
    transitions = [t["to_state"] for t in await handle.query("history")]
    assert transitions[-4:] == ["SUSPENDED", "QUEUED", "PROCESSING", "FAILED"]


async def test_a_duration_that_renders_to_nonsense_fails_the_step(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition({"id": "nap", "type": "delay", "with": {"duration": "{{ input.d }}"}}),
        {"d": "{{ not a duration }}"},
    )
    assert failure.type == "ConfigInvalid" and failure.error["step"] == "nap"
    huge = await fails(
        client, worker.task_queue, definition({"id": "nap", "type": "delay", "with": {"duration": 1e15}})
    )
    assert huge.type == "ConfigInvalid"


async def test_a_signal_breaking_the_schema_does_not_answer_a_later_wait(
    client: Client, worker: Worker
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "first", "type": "delay", "with": {"duration": "300ms"}},
            {
                "id": "gate",
                "type": "wait",
                "with": {"event": "go", "schema": {"type": "object", "required": ["ok"]}, "timeout": "5s"},
            },
        ),
    )
    await handle.signal("go", {"wrong": True})  # arrives before the wait begins
    for _ in range(100):
        if (await handle.query("describe"))["state"] == "WAITING":
            break
        await asyncio.sleep(0.05)
    await handle.signal("go", {"ok": 1})
    assert (await handle.result()).output == {"ok": 1}


async def test_skip_of_a_failed_loop_item_skips_the_loop(client: Client, worker: Worker) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "each",
                "type": "foreach",
                "items": [1, 0],
                "steps": [{"id": "inv", "type": "transform", "with": {"value": "{{ 10 / item }}"}}],
            },
            {"id": "after", "type": "transform", "with": {"value": "{{ steps.each.output }}"}},
            failure={"suspend": True, "retries": []},
        ),
    )
    for _ in range(100):
        if (await handle.query("describe"))["state"] == "SUSPENDED":
            break
        await asyncio.sleep(0.05)
    await handle.execute_update("skip", {"output": {"results": ["manual"]}})
    result = await handle.result()
    assert result.output == {"results": ["manual"]}
    assert statuses(result)["each"] == "skipped"


async def test_an_optional_batched_loop_fails_softly(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "each",
                "type": "foreach",
                "items": [1, 2, 0, 4],
                "batch_size": 2,
                "optional": True,
                "steps": [{"id": "inv", "type": "transform", "with": {"value": "{{ 10 / item }}"}}],
            },
            {"id": "after", "type": "transform", "with": {"value": "went on"}},
        ),
    )
    assert statuses(result)["each"] == "failed" and result.output == "went on"


async def test_loop_indexes_inside_a_batched_loop_start_at_zero(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "outer",
                "type": "foreach",
                "items": [1, 2, 3],
                "batch_size": 2,
                "steps": [
                    {
                        "id": "inner",
                        "type": "foreach",
                        "items": [5, 6],
                        "steps": [
                            {"id": "mark", "type": "transform", "with": {"value": "{{ index }}:{{ item }}"}}
                        ],
                    }
                ],
            }
        ),
    )
    assert [r["results"] for r in result.output["results"]] == [["0:5", "1:6"]] * 3


def test_number_normalizer_reads_exponents_and_refuses_infinity() -> None:
    from workflows.data_ops import NORMALIZERS

    assert NORMALIZERS["number"]("1e3") == 1000.0
    assert NORMALIZERS["number"]("1.234,56") == 1234.56
    with pytest.raises(ValueError, match="finite"):
        NORMALIZERS["number"]("1e999")
