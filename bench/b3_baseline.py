"""B3's hand-written baseline: a fan-out over a long list the way a Temporal user would write it.

A parent workflow splits the items into batches and runs each batch as a child workflow, keeping several
children in flight and starting the next as soon as one ends (a sliding window): ``per_child`` calls in
flight in each child, ``parallelism // per_child`` children at once, so ``parallelism`` calls run at once
overall and no history holds the whole list. A child gets at most a quarter of its batch in flight, so it
runs its items in waves and its window slot spends little time in the tail of a child: at parallelism 100
and batches of 100, four children of 25. One child of 100 at a time, as this baseline ran before, leaves
the slots idle while each child's last items finish and the next child starts. Same activity, same
``StepRequest``s, same retry policy and timeout as the interpreter's ``foreach``, which shares its
parallelism out the same way (``workflows.fanout``).

The parent starts every batch itself: ~9 history events per child, so it stays under Temporal's 10,240-event
warning up to ~110,000 items at batches of 100 (the interpreter splits longer lists into parts instead).

Kept in its own module with nothing but workflow code: the sandbox re-imports a workflow's module for every
run, so the baseline must not drag the benchmark's imports (uvicorn, FastAPI, ...) into each run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.messages import StepOutcome, StepRequest

PARENT_WORKFLOW = "B3BaselineParent"
BATCH_WORKFLOW = "B3BaselineBatch"
WAVES = 4
"""A child runs at most ``batch_size // WAVES`` of its items at once."""
STEP_ID = "call"
"""The step id the interpreter's loop body has; the activities see the same ``StepRequest``s."""


@dataclass
class BaselineWork:
    """What is done per item: ``activity`` with ``config`` (``{item}`` in a string value is the item)."""

    activity: str
    config: dict[str, Any]
    keep: str | None = None
    """Key of the activity output kept per item (as the interpreter's step ``output``); None keeps all."""
    timeout_s: float = 30.0
    max_attempts: int = 3


@dataclass
class BaselineBatch:
    """One child's share: its items and the position of the first in the whole list."""

    work: BaselineWork
    items: list[Any]
    offset: int
    parallelism: int


@dataclass
class BaselineInput:
    """The whole list, the overall parallelism and the items per child workflow."""

    work: BaselineWork
    items: list[Any] = field(default_factory=list)
    parallelism: int = 100
    batch_size: int = 100


@dataclass
class BaselineResult:
    """The kept outputs in item order (a child returns its batch's)."""

    count: int
    results: list[Any]


def _render(config: dict[str, Any], item: Any) -> dict[str, Any]:
    return {k: v.replace("{item}", str(item)) if isinstance(v, str) else v for k, v in config.items()}


@workflow.defn(name=BATCH_WORKFLOW)
class BaselineBatchWorkflow:
    """Calls the activity once per item of its batch, at most ``parallelism`` at a time."""

    @workflow.run
    async def run(self, batch: BaselineBatch) -> BaselineResult:
        work = batch.work
        execution_id = workflow.info().workflow_id
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=60),
            maximum_attempts=work.max_attempts,
        )
        gate = asyncio.Semaphore(batch.parallelism)

        async def one(item: Any) -> Any:
            async with gate:
                outcome = await workflow.execute_activity(
                    work.activity,
                    StepRequest(
                        execution_id=execution_id, step_id=STEP_ID, config=_render(work.config, item)
                    ),
                    result_type=StepOutcome,
                    start_to_close_timeout=timedelta(seconds=work.timeout_s),
                    retry_policy=retry,
                )
            output = outcome.output
            return output.get(work.keep) if work.keep is not None and isinstance(output, dict) else output

        results = await asyncio.gather(*(one(item) for item in batch.items))
        return BaselineResult(count=len(results), results=list(results))


@workflow.defn(name=PARENT_WORKFLOW)
class BaselineParentWorkflow:
    """Child workflows of ``batch_size`` items each, ``parallelism // per_child`` of them at a time."""

    @workflow.run
    async def run(self, request: BaselineInput) -> BaselineResult:
        per_child = max(1, min(request.parallelism, request.batch_size // WAVES))
        # The semaphore is the sliding window: a child's end lets the next waiting batch start at once.
        gate = asyncio.Semaphore(max(1, request.parallelism // per_child))
        size = request.batch_size
        chunks = [request.items[i : i + size] for i in range(0, len(request.items), size)]
        parent_id = workflow.info().workflow_id

        async def run_chunk(number: int, chunk: list[Any]) -> BaselineResult:
            async with gate:
                return await workflow.execute_child_workflow(
                    BaselineBatchWorkflow.run,
                    BaselineBatch(
                        work=request.work, items=chunk, offset=number * size, parallelism=per_child
                    ),
                    id=f"{parent_id}/batch-{number}",
                )

        parts = await asyncio.gather(*(run_chunk(n, chunk) for n, chunk in enumerate(chunks)))
        results = [value for part in parts for value in part.results]
        return BaselineResult(count=len(results), results=results)
