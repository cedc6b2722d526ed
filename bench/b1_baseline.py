"""B1's hand-written baseline: the same three ``http_request`` activity calls, written directly.

Kept in its own module with nothing but workflow code: the sandbox re-imports a workflow's module for every
run, so the baseline must not drag the benchmark's imports (uvicorn, FastAPI, ...) into each run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.messages import StepOutcome, StepRequest

BASELINE_WORKFLOW = "B1Baseline"


@dataclass
class BaselineStep:
    """One activity call: the step id and the ``with`` the interpreter would have rendered."""

    id: str
    config: dict[str, Any]


@dataclass
class BaselineInput:
    """The steps to call, in order, with the retry policy and timeout the definition's defaults give."""

    steps: list[BaselineStep] = field(default_factory=list)
    timeout_s: float = 30.0
    max_attempts: int = 3


@workflow.defn(name=BASELINE_WORKFLOW)
class BaselineWorkflow:
    """Calls ``http_request`` once per step, one after the other, and returns the last outcome."""

    @workflow.run
    async def run(self, request: BaselineInput) -> StepOutcome:
        execution_id = workflow.info().workflow_id
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=60),
            maximum_attempts=request.max_attempts,
        )
        outcome = StepOutcome(output=None)
        for step in request.steps:
            outcome = await workflow.execute_activity(
                "http_request",
                StepRequest(execution_id=execution_id, step_id=step.id, config=step.config),
                result_type=StepOutcome,
                start_to_close_timeout=timedelta(seconds=request.timeout_s),
                retry_policy=retry,
            )
        return outcome
