"""B4's hand-written baseline: the least a Temporal user would write for an entity with an SLA timer.

One workflow per entity holding its state; transitions are an update whose validator checks a table of
allowed moves; entering ``in_progress`` starts a timer for the SLA target and ``completed`` ends the
workflow. It keeps ``ConveyorState`` current (the list filter needs it) but has no lifecycle document, no
permissions, no guards, no SLA records and no automations: the gap to ``EntityWorkflow`` is what those cost.

Kept in its own module with nothing but workflow code: the sandbox re-imports a workflow's module per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core import names

BASELINE_WORKFLOW = "B4BaselineEntity"
ALLOWED = {
    "new": {"in_progress", "blocked", "cancelled"},
    "in_progress": {"completed", "blocked", "cancelled"},
    "blocked": {"in_progress", "cancelled"},
}


@dataclass
class BaselineStart:
    target_minutes: float = 480.0


@dataclass
class BaselineMove:
    target_state: str


@workflow.defn(name=BASELINE_WORKFLOW)
class BaselineEntityWorkflow:
    @workflow.init
    def __init__(self, start: BaselineStart) -> None:
        self._state = "new"
        self._deadline: float | None = None
        self._breached = False

    @workflow.update(name=names.UPDATE_TRANSITION)
    def transition(self, move: BaselineMove) -> str:
        self._state = move.target_state
        workflow.upsert_search_attributes([names.SA_STATE.value_set(self._state)])
        return self._state

    @transition.validator
    def _validate(self, move: BaselineMove) -> None:
        if move.target_state not in ALLOWED.get(self._state, set()):
            raise ApplicationError(f"{self._state} -> {move.target_state}", type="INVALID_TRANSITION")

    @workflow.run
    async def run(self, start: BaselineStart) -> str:
        await workflow.wait_condition(lambda: self._state == "in_progress")
        try:
            await workflow.wait_condition(
                lambda: self._state in ("completed", "cancelled"),
                timeout=timedelta(minutes=start.target_minutes),
            )
        except TimeoutError:
            self._breached = True
            await workflow.wait_condition(lambda: self._state in ("completed", "cancelled"))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state
