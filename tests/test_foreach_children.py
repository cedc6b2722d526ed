"""Long ``foreach`` loops on the real dev server: child slices run at once, histories stay bounded whatever
the length, and a cancel or a failure leaves no child running.

The loops are the 100,000-item loop of B3 in small: a ``batch_size`` of 2 or 4 makes 100+ batches out of a
few hundred items, so the execution starts parts that start batches, as it does for 10,000+ items.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from tests.support.outcome import failure_of
from tests.support.run import start
from tests.support.waiting import until

BOUND_S = 120.0
"""For a run of ~100 small child workflows on two shared cores."""

VALUE = "{{ index }}:{{ 100 // item + input.k }}"
"""Numbers each item by its index in the whole list; fails (ZeroDivision) for a 0."""

NAP = {"id": "nap", "type": "delay", "with": {"duration": "1h"}}
"""A body step that keeps a child running until it is cancelled."""


@dataclass
class Run:
    """One workflow of an execution's tree, as its history shows it."""

    workflow_id: str
    events: int
    children: list[str]
    failed_tasks: int


async def tree(client: Client, workflow_id: str) -> list[Run]:
    """The execution and every child it started, recursively, each read from its full history."""
    found: list[Run] = []
    level = [workflow_id]
    while level:
        runs = await asyncio.gather(*(_run(client, wid) for wid in level))
        found += runs
        level = [child for run in runs for child in run.children]
    return found


async def _run(client: Client, workflow_id: str) -> Run:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    children = [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    ]
    failed = sum(
        1
        for e in history.events
        if e.event_type
        in (EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT)
    )
    return Run(workflow_id, len(history.events), children, failed)


async def statuses(client: Client, ids: Iterable[str]) -> dict[str, WorkflowExecutionStatus | None]:
    """Each workflow's status as Temporal describes it now (None: never started)."""

    async def one(workflow_id: str) -> WorkflowExecutionStatus | None:
        try:
            return (await client.get_workflow_handle(workflow_id).describe()).status
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    ids = list(ids)
    return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids)), strict=True))


async def running_below(client: Client, workflow_id: str) -> int:
    """Workflows under ``workflow_id`` that visibility lists as running."""
    query = f"WorkflowId STARTS_WITH '{workflow_id}/' AND ExecutionStatus = 'Running'"
    return (await client.count_workflows(query)).count


def loop(**fields: Any) -> dict[str, Any]:
    return {"name": f"loop-{uuid.uuid4().hex[:8]}", "steps": [{"id": "each", "type": "foreach", **fields}]}


async def test_a_long_loop_runs_children_at_once_and_a_cancel_ends_them_all(
    client: Client, worker: Worker
) -> None:
    # 808 items in batches of 4 are 202 batches: three parts of up to 100 batches, the first running four
    # batches of parallelism 1 at once (parallelism 4 = batch_size: one batch at a time before).
    document = loop(items="{{ input.items }}", batch_size=4, parallelism=4, steps=[NAP])
    handle = await start(client, worker.task_queue, document, {"items": list(range(808))})
    part = f"{handle.id}/each/part-0"
    batches = [f"{part}/each/batch-{n}" for n in range(4)]

    async def four_running() -> bool:
        found = await statuses(client, batches)
        return all(status == WorkflowExecutionStatus.RUNNING for status in found.values())

    await until(four_running, "four batches of the first part running at once", BOUND_S)
    assert sorted((await _run(client, part)).children) == batches  # and no fifth: parallelism 4

    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as ended:
        await asyncio.wait_for(handle.result(), BOUND_S)
    assert isinstance(ended.value.cause, CancelledError)
    # The execution closed only once its children had: nothing below it is left running.
    runs = await tree(client, handle.id)
    below = [run.workflow_id for run in runs[1:]]
    assert sorted(below) == [part, *batches]
    found = await statuses(client, [handle.id, *below, f"{handle.id}/each/part-1"])
    assert found == {
        handle.id: WorkflowExecutionStatus.CANCELED,
        **dict.fromkeys(below, WorkflowExecutionStatus.CANCELED),
        f"{handle.id}/each/part-1": None,
    }
    assert [run.failed_tasks for run in runs] == [0] * len(runs)  # no UNHANDLED_COMMAND, no timeout
    assert (await handle.query("describe"))["state"] == "CANCELLED"

    async def none_running() -> bool:
        return await running_below(client, handle.id) == 0

    await until(none_running, "visibility lists no running child", BOUND_S)


async def test_a_long_loop_keeps_order_offsets_and_failures_across_parts(
    client: Client, worker: Worker
) -> None:
    # 202 items in batches of 2: part 0 (100 batches, 8 at once) and part 1 (2 items, run in the part).
    items = [i % 50 for i in range(202)]
    document = loop(
        items="{{ input.items }}",
        batch_size=2,
        parallelism=8,
        on_item_error="continue",
        steps=[
            {"id": "inv", "type": "transform", "with": {"value": "{{ index }}:{{ 100 // item + input.k }}"}}
        ],
    )
    handle = await start(client, worker.task_queue, document, {"items": items, "k": 1})
    result = await asyncio.wait_for(handle.result(), BOUND_S)
    assert result.state == "COMPLETED"
    output = result.output
    assert output["count"] == 202
    assert output["results"] == [None if i % 50 == 0 else f"{i}:{100 // (i % 50) + 1}" for i in range(202)]
    assert [(f["index"], f["error"]["code"], f["error"]["step"]) for f in output["failed"]] == [
        (i, "ExpressionFailed", "inv") for i in (0, 50, 100, 150, 200)
    ]
    runs = {run.workflow_id: run for run in await tree(client, handle.id)}
    top = runs[handle.id]
    assert top.children == [f"{handle.id}/each/part-0", f"{handle.id}/each/part-1"]
    assert len(runs[top.children[0]].children) == 100 and runs[top.children[1]].children == []
    assert max(run.events for run in runs.values()) < 1_500
    assert sum(run.failed_tasks for run in runs.values()) == 0


async def test_a_failing_batch_cancels_the_batches_running_beside_it(client: Client, worker: Worker) -> None:
    # Two batches at once: batch 1 fails at its first item while batch 0 naps; fail-fast cancels batch 0.
    document = loop(
        items="{{ input.items }}",
        batch_size=2,
        parallelism=2,
        steps=[{"id": "inv", "type": "transform", "with": {"value": "{{ 10 / item }}"}}, NAP],
    )
    handle = await start(client, worker.task_queue, document, {"items": [1, 1, 0, 1, 1, 1, 1, 1]})
    failure = await asyncio.wait_for(failure_of(handle), BOUND_S)
    assert failure.type == "ExpressionFailed" and failure.error["step"] == "each"
    batches = [f"{handle.id}/each/batch-{n}" for n in range(4)]
    assert await statuses(client, batches) == {
        batches[0]: WorkflowExecutionStatus.CANCELED,
        batches[1]: WorkflowExecutionStatus.FAILED,
        batches[2]: None,
        batches[3]: None,
    }
