"""``python worker.py`` stops cleanly: SIGTERM with runs in its cache (parallel branches, foreach items and
waits in flight, a lane slot held) ends it with code 0 and nothing on its output but log lines.

Temporal's SDK leaves the runs it has cached to Python's garbage collector when a worker stops, which closes
their coroutines from outside their event loop; cleanup in the interpreter that awaited or called the
workflow API there printed tracebacks ("coroutine ignored GeneratorExit")."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core import names
from tests.support import processes
from tests.support.run import start
from tests.support.waiting import until

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "stop-parallel",
        "steps": [
            {
                "id": "both",
                "type": "parallel",
                "branches": {
                    "timer": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
                    "decision": [{"id": "ask", "type": "wait", "with": {"event": "go"}}],
                },
            }
        ],
    },
    {
        "name": "stop-foreach",
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": [1, 2, 3],
                "parallelism": 2,
                "steps": [{"id": "ask", "type": "wait", "with": {"event": "go"}}],
            }
        ],
    },
    {
        "name": "stop-children",  # more items than batch_size: child workflows, which the parent waits for
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": [1, 2, 3, 4],
                "batch_size": 2,
                "parallelism": 4,
                "steps": [{"id": "ask", "type": "wait", "with": {"event": "go"}}],
            }
        ],
    },
    {
        "name": "stop-lane",
        "limits": {"max_concurrent": 1},
        "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
    },
]


async def _state(handle: WorkflowHandle[Any, Any]) -> str:
    # A query is answered by the worker, so once it answers the run sits in that worker's cache.
    described: dict[str, Any] = await handle.query(names.QUERY_DESCRIBE, result_type=dict)
    return str(described["state"])


async def test_sigterm_with_runs_in_the_cache_prints_no_traceback(
    temporal_env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    task_queue = f"tq-stop-{uuid.uuid4()}"
    env = processes.conveyor_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=task_queue,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
    )
    log = tmp_path / "worker.log"
    worker = processes.worker(env, log)
    await worker.start()
    handles: list[WorkflowHandle[Any, Any]] = []
    try:
        for definition in DEFINITIONS:
            handles.append(await start(client, task_queue, definition))
        handles.append(await start(client, task_queue, DEFINITIONS[-1]))  # a second run for the one slot

        seen: list[str] = []

        async def all_in_flight() -> bool:
            seen[:] = await asyncio.gather(*(_state(h) for h in handles))
            # Either run of stop-lane may win the lane's one slot; the other queues behind it.
            return (
                seen[:2] == ["WAITING", "WAITING"]
                and seen[2] in ("PROCESSING", "WAITING")
                and sorted(seen[3:]) == ["PROCESSING", "QUEUED"]
            )

        async def children_waiting() -> bool:
            query = f"ParentWorkflowId = '{handles[2].id}'"
            children = [client.get_workflow_handle(c.id) async for c in client.list_workflows(query)]
            states = await asyncio.gather(*(_state(child) for child in children))
            return states == ["WAITING", "WAITING"]

        try:
            await until(all_in_flight, "every run in flight on the worker")
            await until(children_waiting, "both children of stop-children waiting")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; states {seen}\n{worker.output()}") from None
        await worker.stop()
        assert worker.process is not None and worker.process.returncode == 0, worker.output()
        printed = log.read_text(errors="replace")
        for marker in ("Traceback", "Exception ignored", "GeneratorExit", "Error"):
            assert marker not in printed, printed
        assert "stopping: finishing running activities" in printed
    finally:
        await worker.stop()
        for handle in handles:
            await handle.terminate("test over")
