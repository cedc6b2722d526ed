"""Wait for many executions to end within a bound, and clean up the ones that did not."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle


async def settle(handles: list[WorkflowHandle[Any, Any]], bound_s: float) -> tuple[set[str], set[str]]:
    """(completed, not completed) workflow ids after every execution ended or ``bound_s`` passed.

    Executions still open at the bound are terminated, so a stuck one fails the test without leaking.
    """

    async def outcome(handle: WorkflowHandle[Any, Any]) -> bool:
        try:
            result = await handle.result()
        except WorkflowFailureError:
            return False
        state = result.get("state") if isinstance(result, dict) else getattr(result, "state", None)
        return state == "COMPLETED"

    tasks = {asyncio.create_task(outcome(handle)): handle.id for handle in handles}
    done, pending = await asyncio.wait(tasks, timeout=bound_s)
    for task in pending:
        task.cancel()
        handle = next(h for h in handles if h.id == tasks[task])
        await handle.terminate(reason="did not end within the test's bound")
    completed = {tasks[task] for task in done if not task.cancelled() and task.result()}
    return completed, {handle.id for handle in handles} - completed


async def duplicated_activities(client: Client, workflow_ids: list[str]) -> dict[str, list[str]]:
    """Workflow id -> activity ids its history scheduled more than once (a step run twice by the workflow).

    A retried attempt is not a new schedule, so at-least-once retries after a kill do not count here; a
    workflow task replayed wrongly after a worker died would.
    """
    found: dict[str, list[str]] = {}
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        scheduled = Counter(
            event.activity_task_scheduled_event_attributes.activity_id
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")
        )
        twice = [activity for activity, n in scheduled.items() if n > 1]
        if twice:
            found[workflow_id] = twice
    return found


async def eventually(condition: Callable[[], bool], what: str, within_s: float = 120.0) -> None:
    """Until ``condition()`` holds (checked every 50 ms); fails with ``what`` after ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            # Polling on purpose: the state is another process's, with no event to await.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within_s:g}s: {what}") from None
