"""Run a definition to its end and hand back what tests assert on."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError

from tests.support.run import start
from workflows.messages import ExecutionSnapshot


@dataclass
class Failure:
    """A failed execution: the error type and message, and the snapshot the workflow attached."""

    type: str
    message: str
    snapshot: dict[str, Any]

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.snapshot["error"]
        return error

    def step(self, step_id: str) -> dict[str, Any]:
        return next(s for s in self.snapshot["steps"] if s["id"] == step_id)

    def statuses(self) -> dict[str, str]:
        return {s["id"]: s["status"] for s in self.snapshot["steps"]}


def statuses(snapshot: ExecutionSnapshot) -> dict[str, str]:
    """Step id -> status."""
    return {record.id: record.status for record in snapshot.steps}


async def completes(
    client: Client, task_queue: str, definition: dict[str, Any], input: dict[str, Any] | None = None
) -> ExecutionSnapshot:
    """Run ``definition`` and return its result, failing the test if the execution failed."""
    handle = await start(client, task_queue, definition, input)
    result = await handle.result()
    assert result.state == "COMPLETED", result
    return result


async def fails(
    client: Client, task_queue: str, definition: dict[str, Any], input: dict[str, Any] | None = None
) -> Failure:
    """Run ``definition`` and return how it failed, failing the test if it completed."""
    return await failure_of(await start(client, task_queue, definition, input))


async def failure_of(handle: WorkflowHandle[Any, ExecutionSnapshot]) -> Failure:
    """How the execution behind ``handle`` failed."""
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.non_retryable
    snapshot = cause.details[0]
    assert isinstance(snapshot, dict)
    assert snapshot["state"] == "FAILED"
    return Failure(type=cause.type or "", message=cause.message, snapshot=snapshot)


def history_text(history: WorkflowHistory) -> str:
    """A history as JSON with every payload's data decoded, so tests can search what it really holds."""
    document = json.loads(history.to_json())
    decoded: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                decoded.append(base64.b64decode(node["data"]).decode("utf-8", errors="replace"))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(document)
    assert decoded, "a history always holds payloads"
    return "\n".join([json.dumps(document), *decoded])
