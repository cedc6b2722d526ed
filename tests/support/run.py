"""Start definitions on Temporal directly, as the API does, for tests of the interpreter."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from core import names
from workflows.messages import ExecutionInput, ExecutionSnapshot

FAIL_FAST = {"suspend": False, "retries": []}


async def start(
    client: Client, task_queue: str, definition: dict[str, Any], input: dict[str, Any] | None = None
) -> WorkflowHandle[Any, ExecutionSnapshot]:
    """Start ``definition`` (version 1) on ``task_queue`` with a fresh workflow id.

    Definitions that do not say how to handle failure fail at once here (``FAIL_FAST``), so a test of a
    failing step need not wait out workflow-level retries or operate a parked execution.
    """
    definition = {"failure": FAIL_FAST, **definition}
    name = definition["name"]
    return await client.start_workflow(
        names.DEFINITION_WORKFLOW,
        ExecutionInput(definition=definition, name=name, version=1, input=input or {}),
        id=f"{name}/{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=ExecutionSnapshot,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(names.SA_DEFINITION, name),
                SearchAttributePair(names.SA_VERSION, 1),
                SearchAttributePair(names.SA_STATE, "QUEUED"),
            ]
        ),
    )
