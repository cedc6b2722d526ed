"""``DefinitionWorkflow``: one generic workflow that runs any definition snapshot.

Flow rule: a step waits for the step before it in its list unless it names ``depends_on``; that gives
sequences, parallel groups and DAGs. Workflow-side steps (transform, set, switch, delay, fail, succeed) run
here; every side effect is an activity whose type is the step type and whose summary is the step id.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections import ChainMap
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from activities.lanes import LaneLimits, LaneRelease, LaneRequest, LaneTicket, LaneVerdict, lane_id
    from core import names
    from workflows import data_ops, errors, expressions, fanout
    from workflows.definition import (
        Definition,
        DefinitionInvalid,
        RetrySpec,
        Step,
        dependencies,
        parse_structure,
    )
    from workflows.durations import MAX_SECONDS, parse_duration
    from workflows.inputs import input_problems, merge_patch
    from workflows.messages import (
        AdvanceRequest,
        CancelRequest,
        ControlRequest,
        ControlResult,
        EventsRequest,
        ExecutionEvent,
        ExecutionInput,
        ExecutionSnapshot,
        LogEntry,
        RetryRequest,
        SkipRequest,
        StepError,
        StepOutcome,
        StepRecord,
        StepRequest,
        Transition,
    )
    from workflows.states import ExecutionState, check_transition
    from workflows.steps import (
        STEP_TYPES,
        DelayConfig,
        FailConfig,
        StageConfig,
        SubWorkflowConfig,
        SucceedConfig,
        TransformConfig,
        ValidateConfig,
        WaitConfig,
        parse_config,
        stage_queue,
    )
    from workflows.template_budget import TaskAllowance


PATCH_CANCELLED_ACTIVITY = "cancelled-activity-step-is-cancelled"
"""Histories from before it recorded a cancelled activity step as failed (and a cancelled execution as
failed when an activity was running)."""

PATCH_ADMISSION = "admission-limits"
"""Histories from before it ran a definition with ``limits.max_concurrent`` / ``per_minute`` straight to
PROCESSING; only such definitions check it, so others record no marker."""

PATCH_PARK_ON_FAILURE = "park-on-failure"
"""Histories from before it failed an execution at the first failed step, with no workflow-level retry,
no SUSPENDED state and no ``ConveyorError`` search attribute."""

PATCH_FOREACH_CHILDREN = "foreach-concurrent-children"
"""Histories from before it ran a long ``foreach`` as one flat list of batch children from the execution's
own history, one at a time at ``parallelism`` up to ``batch_size``, and left a child being started
behind when the execution was cancelled."""

PATCH_CANCELLED_WAIT = "cancelled-wait-is-not-resolved"
"""Histories from before it moved an execution cancelled in a ``wait`` step to PROCESSING ("<event>
resolved") on its way to CANCELLED."""

PATCH_BLOCKED_PARKS = "blocked-parks"
"""Histories from before it retried a step the outbound guard refused, or custom code on a worker without a
sandbox, by the failure policy like any system error; no retry could pass, so it parks at once."""
PATCH_WAIT_TIMEOUT_PARKS = "wait-timeout-parks"
"""Histories from before it retried a timed-out ``wait`` (``on_timeout: fail``) like a system error, whose
retries only waited again, instead of parking the execution for an operator at once."""

PATCH_WAIT_TIMEOUT_POSITIVE = "wait-timeout-positive"
"""Histories from before it refused a ``wait`` timeout that a template rendered to 0s (it timed out at once
then, and the execution went to RETRYING)."""

PATCH_TEMPLATE_BOUNDS = "template-bounds"
"""Histories from before it bounded the work and size of each render (a render over the bounds fails its
step with ExpressionFailed instead of holding the workflow task until the SDK declares it deadlocked), and
of all the renders of one workflow task together."""

DONE = frozenset({"completed", "skipped", "recovered"})
"""Step statuses a resumed execution does not run again."""

FOREACH_BATCH = 100
"""Items a ``foreach`` runs in its own history; longer lists go to child workflows (``workflows.fanout``)."""

STAGE_TIMEOUT_S = 3600.0
"""A stage step's default start-to-close timeout: processors may be slow; a dead worker is found by the
heartbeat timeout instead."""

MAX_EVENTS = 10_000
"""Events and log lines kept per run; older ones are dropped first (long loops continue-as-new)."""


class StepFailed(Exception):
    """A step failed for good (after its retries); carries the error the execution reports.

    ``final`` failures (a ``fail`` step) end the execution: no workflow-level retry, no parking.
    """

    def __init__(self, error: StepError, *, final: bool = False) -> None:
        super().__init__(f"{error.step}: {error.code}: {error.message}")
        self.error = error
        self.final = final


class Scope:
    """Where steps record their results: the execution itself, or one ``foreach`` iteration.

    Iterations keep their own records and outputs (``steps.<id>`` inside the loop body means this item's
    step) and see the enclosing scope's outputs too; they send no events, since a loop over thousands of
    items would drown the stream.
    """

    def __init__(
        self,
        records: dict[str, StepRecord],
        view: dict[str, dict[str, Any]],
        parent: Scope | None = None,
        loop: dict[str, Any] | None = None,
    ) -> None:
        self.records = records
        self.view = view
        self.parent = parent
        self.loop = loop or {}
        self.quiet = parent is not None
        index = self.loop.get("index") if parent is not None else None
        self.path: str = (parent.path if parent else "") + (f"/{index}" if index is not None else "")
        """The loop indexes leading here, so children started inside loops get distinct ids."""

    def steps(self) -> Mapping[str, dict[str, Any]]:
        """Outputs visible here: this scope's, then its parents'."""
        views = []
        scope: Scope | None = self
        while scope is not None:
            views.append(scope.view)
            scope = scope.parent
        return views[0] if len(views) == 1 else ChainMap(*views)

    def bindings(self) -> dict[str, Any]:
        """``item`` and ``index`` of the innermost loop."""
        return {**(self.parent.bindings() if self.parent else {}), **self.loop}


_SCOPE: ContextVar[Scope] = ContextVar("conveyor_scope")


class Decision:
    """An operator's answer to a parked execution, handed from an update handler to the run loop."""

    def __init__(self, action: str, request: RetryRequest | SkipRequest) -> None:
        self.action = action
        self.request = request


@dataclass
class _StageVisit:
    """One run of a stage step, from scheduling its activity until it settles."""

    step: str
    stage: str
    handle: workflow.ActivityHandle[StepOutcome] | None = None
    advanced: AdvanceRequest | None = None
    settled: str | None = None
    """completed, advanced, failed or cancelled."""


@dataclass(frozen=True)
class _SliceRun:
    """How the slices of one ``foreach`` run as child workflows: each a definition of one step, the loop
    over its slice, numbering its items from the slice's offset."""

    step: str
    body_step: dict[str, Any]
    execution: ExecutionInput
    context: dict[str, Any]
    """The enclosing scope's step outputs, vars and loop bindings, which the body's templates read."""
    id_prefix: str
    attributes: TypedSearchAttributes

    def request(self, items: list[Any], offset: int, parallelism: int) -> ExecutionInput:
        document = {
            "name": self.execution.name,
            "steps": [{**self.body_step, "parallelism": parallelism}],
            "output": "{{ steps." + self.step + ".output }}",
            "failure": {"suspend": False, "retries": []},
        }
        return ExecutionInput(
            definition=document,
            name=self.execution.name,
            version=self.execution.version,
            input={**self.execution.input, "items": items},
            trigger="foreach",
            actor=self.execution.actor,
            children=self.execution.children,
            context={**self.context, "offset": offset, "step": self.step},
        )

    def child_id(self, number: int) -> str:
        return f"{self.id_prefix}{number}"


class EndExecution(Exception):
    """A ``succeed`` step ended the execution early with ``output``."""

    def __init__(self, output: Any) -> None:
        super().__init__("execution ended by a succeed step")
        self.output = output


@workflow.defn(name=names.DEFINITION_WORKFLOW)
class DefinitionWorkflow:
    """Interprets one pinned definition snapshot."""

    @workflow.init
    def __init__(self, request: ExecutionInput) -> None:
        self._request = request
        self._invalid: str | None = None
        try:
            self._definition: Definition = parse_structure(request.definition)
        except DefinitionInvalid as exc:
            # Raised from run(): an exception from __init__ is not reported as cleanly by the SDK.
            self._invalid = str(exc)
            self._definition = Definition.model_construct(name=request.name, steps=(), on_error=(), vars={})
        self._state = ExecutionState.CREATED
        self._transitions: list[Transition] = []
        self._records: dict[str, StepRecord] = {
            step_id: StepRecord(id=step_id, type=step_type)
            for top in (*self._definition.steps, *self._definition.on_error)
            for step_id, step_type in _tracked(top)
        }
        self._steps_view: dict[str, dict[str, Any]] = {}
        context = request.context or {}
        self._steps_view.update(context.get("steps", {}))
        self._top = Scope(self._records, self._steps_view, loop=context.get("bindings"))
        self._waits = 0
        self._expecting: dict[str, list[WaitConfig]] = {}
        self._vars: dict[str, Any] = {**self._definition.vars, **((request.context or {}).get("vars") or {})}
        self._running: list[str] = []
        self._output: Any = None
        self._error: StepError | None = None
        self._closed_at: str | None = None
        self._events: list[ExecutionEvent] = []
        self._logs: list[LogEntry] = []
        self._parked: StepFailed | None = None
        self._decision: Decision | None = None
        self._pause: ControlRequest | None = None
        self._retries_used = 0
        self._signals: dict[str, list[Any]] = {}
        self._visits: list[_StageVisit] = []
        """Stage steps whose activity is scheduled or running: what ``advance`` cancels."""
        self._stage_names: dict[str, str] = {}
        """Stage step id -> its stage, for the steps that have started."""
        self._renders: TaskAllowance | None = None
        """What the renders of the current workflow task may still spend together (see ``_render``)."""
        self._top_level = {child: step.id for step in self._definition.steps for child in _all_ids(step)}
        info = workflow.info()
        self._execution: dict[str, Any] = {
            "id": info.workflow_id,
            "run_id": info.run_id,
            "definition": request.name,
            "version": request.version,
            "started_at": info.workflow_start_time.isoformat(),
            "trigger": request.trigger,
        }

    @workflow.run
    async def run(self, request: ExecutionInput) -> ExecutionSnapshot:
        """Run the steps, then the definition's ``on_error`` steps on failure or cancellation."""
        if self._invalid is not None:
            raise ApplicationError(
                f"the definition snapshot is not valid: {self._invalid}",
                type=errors.CONFIG_INVALID,
                non_retryable=True,
            )
        started = workflow.info().workflow_start_time.isoformat()
        self._move(ExecutionState.QUEUED, "started", at=started, actor=request.actor)
        self._event("started", data={"definition": request.name, "version": request.version})
        try:
            await self._admit()
            self._move(ExecutionState.PROCESSING, "picked up by a worker")
            while True:
                try:
                    await self._run_block(self._definition.steps)
                    self._settle()
                    self._output = self._final_output()
                    break
                except StepFailed as failure:
                    self._settle()
                    if not await self._recover(failure):
                        raise
        except EndExecution as end:
            self._settle()
            self._output = end.output
        except StepFailed as failure:
            self._error = failure.error
            if self._state is not ExecutionState.FAILED:
                self._move(ExecutionState.FAILED, failure.error.message, step=failure.error.step)
            self._event("failed", failure.error.step, {"error": _error_view(failure.error)})
            await self._run_cleanup()
            self._skip_unrun()
            await self._publish("execution.failed", {"error": _error_view(failure.error)})
            self._closed_at = self._now()
            where = f"step {failure.error.step}" if failure.error.step else "execution"
            raise ApplicationError(
                f"{where} failed: {failure.error.message}",
                self.describe(),
                type=failure.error.code,
                non_retryable=True,
            ) from None
        except asyncio.CancelledError:
            self._error = StepError(code=errors.CANCELLED, message="execution cancelled")
            admitted = self._state is not ExecutionState.QUEUED  # QUEUED here: still waiting for its lane
            if self._state is ExecutionState.RETRYING:  # the table leaves RETRYING only for QUEUED
                self._move(ExecutionState.QUEUED, "cancelled while waiting to retry")
            # The API's cancel names its caller; a lane's cancel_new / cancel_oldest gives its reason.
            cancel = CancelRequest.decode(workflow.cancellation_reason())
            self._move(
                ExecutionState.CANCELLED, cancel.reason or "cancellation requested", actor=cancel.actor
            )
            self._event("cancelled", data={"by": cancel.actor, "reason": cancel.reason})
            if admitted:
                await self._run_cleanup()
            self._skip_unrun()
            self._closed_at = self._now()
            raise
        finally:
            if _on_its_loop():
                await self._release()
        if self._stage_names:
            workflow.upsert_search_attributes([names.SA_STAGE.value_set(names.STAGE_DONE)])
        self._skip_unrun()
        self._move(ExecutionState.COMPLETED, "all steps finished")
        self._event("completed", data={"output": self._output})
        await self._publish("execution.completed", {"output": self._output})
        self._closed_at = self._now()
        return self.describe()

    # -- admission (limits.max_concurrent / per_minute, through the definition's lane) -------------------

    _lane: str | None = None
    """The lane this run asked for a slot; released at every end unless the lane refused it."""
    _verdict: LaneVerdict | None = None

    async def _admit(self) -> None:
        """Wait in QUEUED for a slot of the definition's lane; returns at once for a definition without
        limits, which issues no command here. A ``skip`` verdict ends the execution as completed with
        ``{"skipped": true, "reason": ...}``; ``cancel_new`` arrives as a cancellation."""
        limits = self._definition.limits
        if limits.max_concurrent is None and limits.per_minute is None:
            return
        if not workflow.patched(PATCH_ADMISSION):
            return
        try:
            key = None if limits.key is None else str(self._render(None, limits.key, "limits.key"))
        except StepFailed as failure:
            self._move(ExecutionState.PROCESSING, "picked up by a worker")
            raise StepFailed(failure.error, final=True) from None

        def on_verdict(verdict: LaneVerdict) -> None:
            if verdict.run_id == workflow.info().run_id:
                self._verdict = verdict

        workflow.set_signal_handler(names.SIGNAL_LANE_VERDICT, on_verdict)
        info = workflow.info()
        self._lane = lane_id(self._request.name, key)
        self._log("info", f"waiting for a slot in {self._lane}", None)
        try:
            await workflow.execute_activity(
                names.ACTIVITY_LANE_ACQUIRE,
                LaneRequest(
                    execution_id=info.workflow_id,
                    run_id=info.run_id,
                    definition=self._request.name,
                    key=key,
                    limits=LaneLimits(
                        max_concurrent=limits.max_concurrent,
                        per_minute=limits.per_minute,
                        on_limit=limits.on_limit,
                    ),
                ),
                result_type=LaneTicket,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                summary="admission",
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):  # cancelled while asking: the cancel path takes over
                raise asyncio.CancelledError() from None
            raise
        await workflow.wait_condition(lambda: self._verdict is not None)
        assert self._verdict is not None
        if self._verdict.granted:
            self._log("info", f"admitted by {self._lane}", None)
            return
        self._lane = None  # the lane keeps nothing for a refused run
        reason = self._verdict.reason or "limit reached"
        self._move(ExecutionState.PROCESSING, f"skipped: {reason}")
        raise EndExecution({"skipped": True, "reason": reason})

    async def _release(self) -> None:
        """Give the lane back this run's slot (or its place in the queue); a lane that is gone is fine."""
        if self._lane is None:
            return
        lane, self._lane = self._lane, None
        info = workflow.info()
        try:
            await workflow.get_external_workflow_handle(lane).signal(
                names.SIGNAL_LANE_RELEASE, LaneRelease(execution_id=info.workflow_id, run_id=info.run_id)
            )
        except (FailureError, asyncio.CancelledError):
            # The lane has exited (nothing to free), or the run was cancelled as it ended: a lane frees the
            # slot of a closed run itself when it verifies its holders.
            self._log("warning", f"could not release the slot in {lane}", None)

    async def _recover(self, failure: StepFailed) -> bool:
        """Retry the execution later or park it for an operator; False when it is to fail for good."""
        if not workflow.patched(PATCH_PARK_ON_FAILURE):
            return False
        error = failure.error
        self._error = error
        self._move(ExecutionState.FAILED, error.message, step=error.step, metadata={"code": error.code})
        workflow.upsert_search_attributes([names.SA_ERROR.value_set(error.code)])
        policy = self._definition.failure
        if failure.final:
            return False
        if self._retried(error) and self._retries_used < len(policy.retries):
            delay = policy.retries[self._retries_used]
            self._retries_used += 1
            self._move(ExecutionState.RETRYING, f"retry {self._retries_used} in {delay:g}s", step=error.step)
            self._event("retrying", error.step, {"attempt": self._retries_used, "delay_s": delay})
            self._log("warning", f"execution retry {self._retries_used} in {delay:g}s", error.step)
            await workflow.sleep(timedelta(seconds=delay), summary=f"retry {self._retries_used}")
            self._reset_for_retry(None)
            self._move(ExecutionState.QUEUED, "retrying after a system error", step=error.step)
            self._move(ExecutionState.PROCESSING, "picked up again")
            return True
        if not policy.suspend:
            return False
        self._parked = failure
        self._move(ExecutionState.SUSPENDED, f"parked for an operator: {error.message}", step=error.step)
        self._event("suspended", error.step, {"error": _error_view(error)})
        await workflow.wait_condition(lambda: self._decision is not None)
        decision, self._decision, self._parked = self._decision, None, None
        assert decision is not None
        actor = decision.request.actor
        if isinstance(decision.request, RetryRequest):
            if decision.request.input_patch is not None:
                self._request.input = merge_patch(self._request.input, decision.request.input_patch)
            self._reset_for_retry(decision.request.from_step)
            reason = f"retry from {decision.request.from_step or error.step}"
        else:
            self._skip_failed(error, decision.request.output)
            reason = f"skipped {error.step}"
        self._error = None
        self._move(ExecutionState.QUEUED, reason, step=error.step, actor=actor)
        self._event("resumed", error.step, {"action": decision.action, "actor": actor})
        self._move(ExecutionState.PROCESSING, "picked up again")
        return True

    @staticmethod
    def _retried(error: StepError) -> bool:
        """Whether the failure policy's ``retries`` apply: system errors, which may pass. Not data errors, and
        not a ``wait`` that timed out: running it again would only wait again."""
        if errors.is_data_error(error.code):
            return False
        if error.code in errors.PARKED_AT_ONCE and workflow.patched(PATCH_BLOCKED_PARKS):
            return False
        return not (error.code == errors.WAIT_TIMEOUT and workflow.patched(PATCH_WAIT_TIMEOUT_PARKS))

    # -- control updates ----------------------------------------------------------------------------------

    @workflow.update(name=names.UPDATE_RETRY)
    async def retry(self, request: RetryRequest) -> ControlResult:
        """Resume a parked execution by running its failed step (or ``from_step``) again."""
        self._decide(Decision("retry", request))
        return ControlResult(state=ExecutionState.QUEUED.value, message="retry accepted")

    @retry.validator
    def _check_retry(self, request: RetryRequest) -> None:
        self._require_parked("retry")
        if request.from_step is not None and request.from_step not in {s.id for s in self._definition.steps}:
            raise ApplicationError(
                f"from_step {request.from_step!r} is not a top-level step of this definition",
                {"field": "from_step"},
                type=errors.INPUT_INVALID,
            )
        if request.input_patch is not None:
            patched = merge_patch(self._request.input, request.input_patch)
            problems = input_problems(self._definition.input, patched)
            if problems:
                raise ApplicationError(
                    "the patched input does not match the input schema",
                    {"problems": problems},
                    type=errors.INPUT_INVALID,
                )

    @workflow.update(name=names.UPDATE_SKIP)
    async def skip(self, request: SkipRequest) -> ControlResult:
        """Resume a parked execution past its failed step, which takes ``output`` as its output."""
        self._decide(Decision("skip", request))
        return ControlResult(state=ExecutionState.QUEUED.value, message="skip accepted")

    @skip.validator
    def _check_skip(self, request: SkipRequest) -> None:
        self._require_parked("skip")

    @workflow.update(name=names.UPDATE_SUSPEND)
    async def suspend(self, request: ControlRequest) -> ControlResult:
        """Park a running execution at its next step boundary, until ``resume``."""
        self._pause = request
        self._log("info", f"suspend requested{f': {request.reason}' if request.reason else ''}", None)
        return ControlResult(state=self._state.value, message="suspends at the next step boundary")

    @suspend.validator
    def _check_suspend(self, request: ControlRequest) -> None:
        if self._state not in (ExecutionState.PROCESSING, ExecutionState.WAITING) or self._pause is not None:
            raise self._invalid_state("suspend", "a running execution that is not already suspending")

    @workflow.update(name=names.UPDATE_RESUME)
    async def resume(self, request: ControlRequest) -> ControlResult:
        """Continue an execution suspended by ``suspend`` (or cancel a suspend not yet in effect)."""
        self._pause = None
        return ControlResult(state=self._state.value, message="resumed")

    @resume.validator
    def _check_resume(self, request: ControlRequest) -> None:
        if self._pause is None:
            raise self._invalid_state("resume", "an execution suspended with `suspend`")

    @workflow.update(name=names.UPDATE_SETTLED, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def settled(self, request: ControlRequest) -> ControlResult:
        """Answer once the execution is SUSPENDED. Earlier API processes sent it with every start with
        ``wait``; it stays for the executions holding one (their histories replay it) and for such processes
        during an upgrade. A start with ``wait`` now describes the execution instead: each of these updates
        stayed in flight until SUSPENDED, and Temporal refuses an execution's updates beyond ten in flight.
        Left unanswered (abandoned) when the execution closes first."""
        await workflow.wait_condition(lambda: self._state is ExecutionState.SUSPENDED)
        return ControlResult(state=self._state.value, message="waiting for an operator")

    @workflow.update(name=names.UPDATE_ADVANCE)
    async def advance(self, request: AdvanceRequest) -> ControlResult:
        """Move a pipeline item past its stage by hand: the stage's queued or running work is cancelled
        (or, parked after a failure, skipped) and ``output`` becomes the stage's output. Answers once the
        stage has let go: a stage that finished first refuses the advance."""
        parked = self._parked_stage()
        if parked is not None:
            self._decide(Decision("skip", SkipRequest(output=request.output, actor=request.actor)))
            return ControlResult(state=ExecutionState.QUEUED.value, message=f"advanced past stage {parked}")
        visits = self._advanceable(request.stage)
        if not visits:  # another advance in the same workflow task took them
            raise self._invalid_state("advance", self._at_stage_needed(request.stage))
        for visit in visits:
            visit.advanced = request
            if visit.handle is not None:
                visit.handle.cancel()
        await workflow.wait_condition(lambda: all(visit.settled is not None for visit in visits))
        if not any(visit.settled == "advanced" for visit in visits):
            raise ApplicationError(
                f"stage {visits[0].stage} finished before the advance took effect",
                {"stage": visits[0].stage, "action": "advance"},
                type=errors.INVALID_STATE,
            )
        return ControlResult(state=self._state.value, message=f"advanced past stage {visits[0].stage}")

    @advance.validator
    def _check_advance(self, request: AdvanceRequest) -> None:
        parked = self._parked_stage()
        if parked is not None and request.stage in (None, parked):
            return
        if not self._advanceable(request.stage):
            raise self._invalid_state("advance", self._at_stage_needed(request.stage))

    def _parked_stage(self) -> str | None:
        """The stage an execution parked after a failure is at, when it is parked at a stage step."""
        if self._parked is None or self._decision is not None:
            return None
        return self._stage_names.get(self._parked.error.step or "")

    def _advanceable(self, stage: str | None) -> list[_StageVisit]:
        return [v for v in self._visits if v.advanced is None and stage in (None, v.stage)]

    @staticmethod
    def _at_stage_needed(stage: str | None) -> str:
        return f"a pipeline item at stage {stage}" if stage else "a pipeline item at a stage"

    @workflow.signal(dynamic=True)
    def signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Any named signal (``temporal workflow signal --name approve``): kept for the steps that wait."""
        payload = workflow.payload_converter().from_payload(args[0].payload) if args else None
        problems = self._decision_problems(name, payload)
        if problems:
            # A signal cannot be refused, so one that breaks the wait's schema is logged and not used.
            self._log(
                "warning", f"signal {name} ignored: {problems[0]['message']}", None, {"problems": problems}
            )
            return
        self._signals.setdefault(name, []).append(payload)
        self._log("info", f"signal {name} received", None, {"signal": name})
        self._event("signal", data={"name": name})

    @workflow.update(dynamic=True)
    async def decide(self, name: str, args: Sequence[RawValue]) -> dict[str, Any]:
        """Any other named update resolves the ``wait`` step waiting for it (approval and its payload)."""
        payload = workflow.payload_converter().from_payload(args[0].payload) if args else None
        self._signals.setdefault(name, []).append(payload)
        self._log("info", f"update {name} received", None, {"update": name})
        self._event("signal", data={"name": name, "update": True})
        return {"accepted": True, "event": name}

    @decide.validator
    def _check_decide(self, name: str, args: Sequence[RawValue]) -> None:
        if name not in self._expecting:
            raise self._invalid_state(name, f"a wait step waiting for {name!r}")
        payload = workflow.payload_converter().from_payload(args[0].payload) if args else None
        problems = self._decision_problems(name, payload)
        if problems:
            raise ApplicationError(
                f"the {name} payload does not match the wait's schema",
                {"problems": problems},
                type=errors.INPUT_INVALID,
            )

    def _decision_problems(self, name: str, payload: Any) -> list[dict[str, str]]:
        waiting = self._expecting.get(name)
        expected = waiting[0] if waiting else None
        if expected is None or expected.json_schema is None:
            return []
        return [
            {**p, "path": p["path"].replace("$.input", "$.payload", 1)}
            for p in input_problems(expected.json_schema, payload)
        ]

    def _decide(self, decision: Decision) -> None:
        # Two updates validated in one workflow task both pass the validator; only the first may decide.
        if self._decision is not None:
            raise self._invalid_state(decision.action, "an execution no other operator has just answered")
        self._decision = decision

    def _require_parked(self, action: str) -> None:
        if self._state is not ExecutionState.SUSPENDED or self._parked is None or self._decision is not None:
            raise self._invalid_state(action, "an execution SUSPENDED after a failed step")

    def _invalid_state(self, action: str, needs: str) -> ApplicationError:
        return ApplicationError(
            f"{action} needs {needs}; this one is {self._state.value}",
            {"state": self._state.value, "action": action},
            type=errors.INVALID_STATE,
        )

    def _settle(self) -> None:
        """Back to PROCESSING when the steps stopped while a sibling branch had paused the execution (an
        operator's suspend taking effect) or was waiting: the run can only fail or end from PROCESSING."""
        if self._state is ExecutionState.SUSPENDED and self._parked is None:
            self._pause = None
            self._move(ExecutionState.QUEUED, "the steps stopped while suspended")
            self._move(ExecutionState.PROCESSING, "picked up again")
        elif self._state is ExecutionState.WAITING:
            self._waits = 0
            self._move(ExecutionState.PROCESSING, "the steps stopped while waiting")

    async def _boundary(self) -> None:
        """Where an operator's ``suspend`` takes effect: before a step starts."""
        if self._pause is None:
            return
        if self._state is ExecutionState.PROCESSING:
            self._move(
                ExecutionState.SUSPENDED,
                self._pause.reason or "suspended by an operator",
                actor=self._pause.actor,
            )
            self._event("suspended", data={"by": self._pause.actor, "reason": self._pause.reason})
        await workflow.wait_condition(lambda: self._pause is None)
        if self._state is ExecutionState.SUSPENDED:
            self._move(ExecutionState.QUEUED, "resumed by an operator")
            self._event("resumed", data={"action": "resume"})
            self._move(ExecutionState.PROCESSING, "picked up again")

    def _reset_for_retry(self, from_step: str | None) -> None:
        """Mark what must run again: unfinished top-level steps, and ``from_step`` with all after it."""
        block = self._definition.steps
        again = {
            step.id
            for step in block
            if self._records[step.id].status not in DONE
            and not (self._records[step.id].status == "failed" and _tolerates_failure(step))
        }
        if from_step is not None:
            again |= _downstream(block, from_step)
        for step in block:
            if step.id in again:
                for child, _ in _tracked(step):
                    record = self._records[child]
                    self._records[child] = StepRecord(id=record.id, type=record.type)
                    self._steps_view.pop(child, None)

    def _skip_failed(self, error: StepError, output: Any) -> None:
        """The top-level step holding the failure counts as skipped with ``output``; its cancelled
        siblings run again."""
        failed_top = self._top_level.get(error.step or "", error.step or "")
        for step in self._definition.steps:
            if step.id == failed_top:
                self._finish(self._records[step.id], "skipped", output=output)
        self._reset_for_retry(None)

    @workflow.query(name=names.QUERY_DESCRIBE)
    def describe(self) -> ExecutionSnapshot:
        """State, per-step status, output and error so far."""
        return ExecutionSnapshot(
            state=self._state.value,
            definition=self._request.name,
            version=self._request.version,
            steps=list(self._records.values()),
            current_step=self._running[-1] if self._running else None,
            input=self._request.input,
            output=self._output,
            error=self._error,
            started_at=self._execution["started_at"],
            closed_at=self._closed_at,
        )

    @workflow.query(name=names.QUERY_HISTORY)
    def history(self) -> list[Transition]:
        """Every state transition so far, oldest first."""
        return list(self._transitions)

    @workflow.query(name=names.QUERY_EVENTS)
    def events(self, request: EventsRequest) -> list[ExecutionEvent]:
        """Events after sequence number ``request.after``, oldest first."""
        return [event for event in self._events if event.seq > request.after]

    @workflow.query(name=names.QUERY_LOGS)
    def logs(self) -> list[LogEntry]:
        """The execution's log lines, oldest first."""
        return list(self._logs)

    # -- flow ---------------------------------------------------------------------------------------------

    async def _run_block(self, block: tuple[Step, ...]) -> None:
        """Run a list of steps, each as soon as what it waits for is done; a failure cancels the rest."""
        if len(block) == 1:
            await self._run_step(block[0])
            return
        waits_for = dependencies(block)
        done: dict[str, asyncio.Event] = {step.id: asyncio.Event() for step in block}

        async def run_when_ready(step: Step) -> None:
            for dep in waits_for[step.id]:
                await done[dep].wait()
            await self._run_step(step)
            done[step.id].set()

        await _all_or_first_failure([asyncio.create_task(run_when_ready(step)) for step in block])

    def _scope(self) -> Scope:
        return _SCOPE.get(self._top)

    async def _run_step(self, step: Step) -> None:
        scope = self._scope()
        record = scope.records[step.id]
        if record.status != "pending":  # done before this execution was resumed
            return
        await self._boundary()
        try:
            if step.when is not None and not expressions.truthy(self._render(step, step.when, "when")):
                self._finish(record, "skipped")
                return
        except StepFailed as failure:
            self._finish(record, "failed", failure.error)
            raise
        record.status = "running"
        record.started_at = self._now()
        self._running.append(step.id)
        if not scope.quiet:
            self._event("step_started", step.id, {"type": step.type})
        try:
            raw = await self._execute(step, record)
            output = raw if step.output is None else self._render(step, step.output, "output", output=raw)
            self._finish(record, "completed", output=output)
        except StepFailed as failure:
            await self._on_step_error(step, record, failure)
        except EndExecution as end:
            # A succeed step (or the switch holding one) finished: the execution ends here, successfully.
            self._finish(record, "completed", output=end.output if step.type == "succeed" else None)
            raise
        except asyncio.CancelledError:
            self._finish(record, "cancelled")
            raise
        finally:
            self._running.remove(step.id)

    async def _on_step_error(self, step: Step, record: StepRecord, failure: StepFailed) -> None:
        """Apply the step's ``optional`` / ``on_error`` to a failure, or let it fail the block."""
        if step.type not in _ACTIVITY_LOGGED and not self._scope().quiet:
            self._log("error", f"{failure.error.code}: {failure.error.message}", step.id)
        if isinstance(step.on_error, tuple):
            self._finish(record, "failed", failure.error)
            await self._run_block(step.on_error)
            last = self._scope().steps().get(step.on_error[-1].id, {})
            self._finish(record, "recovered", failure.error, output=last.get("output"))
        elif step.optional or step.on_error == "continue":
            self._finish(record, "failed", failure.error)
        else:
            self._finish(record, "failed", failure.error)
            raise failure

    async def _execute(self, step: Step, record: StepRecord) -> Any:
        spec = STEP_TYPES.get(step.type)
        if spec is None:
            raise StepFailed(
                StepError(
                    code=errors.CONFIG_INVALID, message=f"unknown step type {step.type!r}", step=step.id
                )
            )
        if step.type == "stage":
            return await self._run_stage(step, record)
        if spec.activity is not None:
            return await self._run_activity(step, spec.activity, record)
        match step.type:
            case "transform":
                return self._run_transform(step)
            case "validate":
                return self._run_validate(step)
            case "foreach":
                return await self._run_foreach(step)
            case "parallel":
                return await self._run_parallel(step)
            case "wait":
                return await self._run_wait(step)
            case "sub_workflow":
                return await self._run_sub_workflow(step)
            case "set":
                values = self._render(step, step.with_, "with")
                self._vars.update(values)
                return values
            case "switch":
                return await self._run_switch(step)
            case "delay":
                await self._run_delay(step)
                return None
            case "fail":
                config = self._config(step, FailConfig)
                raise StepFailed(
                    StepError(code=config.error_code, message=config.message, step=step.id), final=True
                )
            case "succeed":
                raise EndExecution(self._config(step, SucceedConfig).output)
        raise StepFailed(
            StepError(code=errors.CONFIG_INVALID, message=f"no runner for {step.type}", step=step.id)
        )

    def _run_transform(self, step: Step) -> Any:
        lazy = STEP_TYPES["transform"].lazy
        rendered = {k: v if k in lazy else self._render(step, v, f"with.{k}") for k, v in step.with_.items()}
        config: TransformConfig = self._config(step, TransformConfig, rendered)
        if "value" in config.model_fields_set:
            return config.value
        items = config.items
        if not isinstance(items, list):
            raise self._config_error(step, f"with.items must be a list, not {type(items).__name__}")
        if config.filter is not None:
            items = [
                item
                for index, item in enumerate(items)
                if expressions.truthy(
                    self._render(step, config.filter, "with.filter", item=item, index=index)
                )
            ]
        if config.fields is not None:
            items = [data_ops.map_fields(item, config.fields) for item in items]
        if config.map is not None:
            items = [
                self._render(step, config.map, "with.map", item=item, index=index)
                for index, item in enumerate(items)
            ]
        if config.normalize is not None:
            rules = {k: [v] if isinstance(v, str) else list(v) for k, v in config.normalize.items()}
            try:
                items = [data_ops.normalize(item, rules) for item in items]
            except (ValueError, ArithmeticError) as exc:
                raise StepFailed(
                    StepError(code=errors.VALIDATION_FAILED, message=f"normalize: {exc}", step=step.id)
                ) from None
        if config.aggregate is not None:
            spec = config.aggregate
            group_by = [spec.group_by] if isinstance(spec.group_by, str) else list(spec.group_by or [])
            return data_ops.aggregate(
                items, group_by, {k: {str(f): a for f, a in v.items()} for k, v in spec.metrics.items()}
            )
        return items

    def _run_validate(self, step: Step) -> dict[str, Any]:
        config: ValidateConfig = self._config(step, ValidateConfig)
        rules = [rule.model_dump(by_alias=True, exclude_none=True) for rule in config.rules]
        result = data_ops.validate_items(config.items, rules)
        if config.fail_on_invalid and result["invalid"]:
            first = result["errors"][0]
            raise StepFailed(
                StepError(
                    code=errors.VALIDATION_FAILED,
                    message=f"{result['invalid_count']} invalid item(s); first: item {first['index']}: "
                    f"{first['message']}",
                    step=step.id,
                    details={"invalid": result["invalid"][:50]},
                )
            )
        return result

    async def _run_parallel(self, step: Step) -> dict[str, Any]:
        """Named branches at once; ``fail_fast`` (default) cancels the others at the first failure."""
        branches = step.branches or {}
        fail_fast = step.fail_fast is not False

        async def branch(steps: tuple[Step, ...]) -> None:
            await self._run_block(steps)

        tasks = {name: asyncio.create_task(branch(steps)) for name, steps in branches.items()}
        await _all_or_first_failure(list(tasks.values()), fail_fast=fail_fast, raise_first=False)
        failures = {
            name: task.exception()
            for name, task in tasks.items()
            if not task.cancelled() and task.exception() is not None
        }
        for failure in failures.values():
            if not isinstance(failure, StepFailed):
                raise failure  # type: ignore[misc]
        if failures:
            names_failed = ", ".join(sorted(failures))
            first = next(iter(failures.values()))
            assert isinstance(first, StepFailed)
            raise StepFailed(
                StepError(
                    code=first.error.code,
                    message=f"branch(es) {names_failed} failed: {first.error.message}",
                    step=step.id,
                    details={
                        "branches": {
                            n: _error_view(f.error) for n, f in failures.items() if isinstance(f, StepFailed)
                        }
                    },
                )
            )
        view = self._scope().steps()
        return {name: view.get(steps[-1].id, {}).get("output") for name, steps in branches.items()}

    async def _run_wait(self, step: Step) -> Any:
        """Until the signal or update ``event`` arrives; WAITING meanwhile."""
        config: WaitConfig = self._config(step, WaitConfig)
        name = config.event
        self._expecting.setdefault(name, []).append(config)
        self._waits += 1
        if self._waits == 1 and self._state is ExecutionState.PROCESSING:
            self._move(ExecutionState.WAITING, f"waiting for {name}", step=step.id)
            self._event("waiting", step.id, {"event": name})
        ended = f"the wait for {name} failed"
        try:
            limit = (
                self._seconds(step, config.timeout, "with.timeout") if config.timeout is not None else None
            )
            if limit == 0 and workflow.patched(PATCH_WAIT_TIMEOUT_POSITIVE):
                raise self._config_error(step, "with.timeout: a wait's timeout must be more than 0s")
            deadline = workflow.time() + limit if limit is not None else None
            while True:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._signals.get(name)),
                        timeout=max(deadline - workflow.time(), 0) if deadline is not None else None,
                        timeout_summary=f"{step.id} timeout",
                    )
                except builtins.TimeoutError:
                    ended = f"no {name} before the timeout"
                    return await self._on_wait_timeout(step, config)
                payload = self._signals[name].pop(0)
                problems = self._decision_problems(name, payload)
                if not problems:
                    ended = f"{name} resolved"
                    return payload
                # Sent before this wait began, so never checked: it does not answer this wait.
                self._log(
                    "warning", f"{name} ignored: {problems[0]['message']}", step.id, {"problems": problems}
                )
        except asyncio.CancelledError:
            ended = f"the wait for {name} was cancelled"
            raise
        finally:
            self._waits -= 1
            # Several waits (loop iterations) may wait for one name: only this one is done.
            waiting = self._expecting.get(name, [])
            if config in waiting:
                waiting.remove(config)
            if not waiting:
                self._expecting.pop(name, None)
            if (
                self._waits == 0
                and self._state is ExecutionState.WAITING
                and _on_its_loop()
                and not self._cancelled_while_waiting()
            ):
                self._move(ExecutionState.PROCESSING, ended, step=step.id)

    def _cancelled_while_waiting(self) -> bool:
        """Whether the execution itself is being cancelled (not a wait cancelled by a failed sibling): it
        goes from WAITING to CANCELLED, recorded by the cancellation with who asked for it."""
        return workflow.cancellation_reason() is not None and workflow.patched(PATCH_CANCELLED_WAIT)

    async def _on_wait_timeout(self, step: Step, config: WaitConfig) -> Any:
        policy = step.on_timeout or "fail"
        self._log("warning", f"no {config.event} before the timeout", step.id)
        if policy == "continue":
            return config.default
        if isinstance(policy, tuple):
            await self._run_block(policy)
            return self._scope().steps().get(policy[-1].id, {}).get("output")
        raise StepFailed(
            StepError(code=errors.WAIT_TIMEOUT, message=f"no {config.event} before the timeout", step=step.id)
        )

    async def _run_sub_workflow(self, step: Step) -> Any:
        config: SubWorkflowConfig = self._config(step, SubWorkflowConfig)
        key = config.definition if config.version is None else f"{config.definition}@{config.version}"
        child = self._request.children.get(key)
        if child is None:
            raise self._config_error(step, f"definition {key} was not pinned when the execution started")
        suffix = self._scope().path
        try:
            snapshot = await workflow.execute_child_workflow(
                names.DEFINITION_WORKFLOW,
                ExecutionInput(
                    definition=child.definition,
                    name=child.name,
                    version=child.version,
                    input=config.input if isinstance(config.input, dict) else {"value": config.input},
                    trigger="sub_workflow",
                    actor=self._request.actor,
                    children=self._request.children,
                ),
                id=f"{self._execution['id']}/{step.id}{suffix}",
                result_type=ExecutionSnapshot,
                search_attributes=_child_attributes(child.name, child.version),
            )
        except ChildWorkflowError as exc:
            raise StepFailed(_child_error(step.id, exc)) from None
        return snapshot.output

    async def _run_foreach(self, step: Step) -> dict[str, Any]:
        """The body once per item, at most ``parallelism`` at a time; big lists go to child workflows."""
        items = self._render(step, step.items, "items")
        if not isinstance(items, list):
            raise self._config_error(step, f"items must be a list, not {type(items).__name__}")
        if step.max_items is not None and len(items) > step.max_items:
            raise StepFailed(
                StepError(
                    code=errors.VALIDATION_FAILED,
                    message=f"{len(items)} items, more than max_items {step.max_items}",
                    step=step.id,
                )
            )
        batch = step.batch_size or FOREACH_BATCH
        context = self._request.context or {}
        # A slice run as a child numbers its items from the slice's offset; loops nested in it do not.
        offset = int(context.get("offset", 0)) if context.get("step") == step.id else 0
        if len(items) <= batch:
            results, failed = await self._foreach_here(step, items, offset)
        elif workflow.patched(PATCH_FOREACH_CHILDREN):
            results, failed = await self._foreach_children(step, items, batch, offset)
        else:
            results, failed = await self._foreach_batches(step, items, batch)
        return {"results": results, "failed": failed, "count": len(items)}

    async def _foreach_here(
        self, step: Step, items: list[Any], offset: int
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        body = step.steps or ()
        results: list[Any] = [None] * len(items)
        failed: list[dict[str, Any]] = []
        gate = asyncio.Semaphore(step.parallelism or 1)
        outer = self._scope()
        tolerate = step.on_item_error == "continue"

        async def iteration(position: int, item: Any) -> None:
            async with gate:
                records = {
                    sid: StepRecord(id=sid, type=stype) for top in body for sid, stype in _tracked(top)
                }
                scope = Scope(records, {}, outer, {"item": item, "index": offset + position})
                token = _SCOPE.set(scope)
                try:
                    await self._run_block(body)
                    results[position] = scope.view.get(body[-1].id, {}).get("output")
                except StepFailed as failure:
                    if not tolerate:
                        raise
                    failed.append({"index": offset + position, "error": _error_view(failure.error)})
                finally:
                    if _on_its_loop():  # elsewhere the token belongs to a context that is not current
                        _SCOPE.reset(token)

        tasks = [asyncio.create_task(iteration(i, item)) for i, item in enumerate(items)]
        await _all_or_first_failure(tasks)
        failed.sort(key=lambda entry: int(entry["index"]))
        return results, failed

    async def _foreach_children(
        self, step: Step, items: list[Any], batch: int, offset: int
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        """Slices of the list as child workflows (``workflows.fanout``): batches of ``batch`` items, or
        parts that split themselves again, several at once, each slot starting its next child as soon as
        its child ends. A failure (unless ``on_item_error: continue`` absorbed it in the child) or the
        execution's cancellation cancels the running children and waits until they have ended."""
        plan = fanout.plan(len(items), batch, step.parallelism or 1)
        slices = plan.slices(len(items))
        kind = "batch" if plan.size == batch else "part"
        run = self._slice_run(step, batch, f"{step.id}/{kind}-")
        outputs: list[Any] = [None] * len(slices)
        failures: dict[int, StepFailed] = {}
        running: dict[int, workflow.ChildWorkflowHandle[Any, ExecutionSnapshot]] = {}
        queue = iter(range(len(slices)))
        stopping = False

        async def slot(parallelism: int) -> None:
            for number in queue:  # shared by the slots: each takes the next slice
                if stopping:
                    return
                start, end = slices[number]
                handle = await workflow.start_child_workflow(
                    names.DEFINITION_WORKFLOW,
                    run.request(items[start:end], offset + start, parallelism),
                    id=run.child_id((offset + start) // plan.size),
                    result_type=ExecutionSnapshot,
                    search_attributes=run.attributes,
                )
                running[number] = handle
                try:
                    if stopping:  # the stop began while this child was starting
                        await _cancel_child(handle)
                    snapshot = await handle
                except ChildWorkflowError as exc:
                    if stopping and isinstance(exc.cause, CancelledError):
                        return
                    failures[number] = StepFailed(_child_error(step.id, exc))
                    raise failures[number] from None
                finally:
                    del running[number]
                outputs[number] = snapshot.output

        slots = [asyncio.create_task(slot(share)) for share in plan.slots]
        try:
            await workflow.wait(slots, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # Also on the execution's cancellation: the slots are not cancelled themselves (a child
            # cancelled while starting would be left behind), their children are, and are waited for.
            stopping = True
            if _on_its_loop():
                await asyncio.gather(*(_cancel_child(handle) for handle in list(running.values())))
                await asyncio.gather(*slots, return_exceptions=True)
        if failures:
            raise failures[min(failures)]
        for task in slots:
            task.result()  # anything else that went wrong
        return self._slice_outputs(step, outputs)

    async def _foreach_batches(
        self, step: Step, items: list[Any], batch: int
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        """Child workflows of ``batch`` items each, at most ``parallelism // batch`` at a time: histories
        from before ``PATCH_FOREACH_CHILDREN``."""
        parallelism = step.parallelism or 1
        per_child = min(parallelism, batch)
        gate = asyncio.Semaphore(max(1, parallelism // per_child))
        chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
        run = self._slice_run(step, batch, f"{step.id}/batch-")

        async def run_chunk(number: int, chunk: list[Any]) -> Any:
            async with gate:
                try:
                    snapshot = await workflow.execute_child_workflow(
                        names.DEFINITION_WORKFLOW,
                        run.request(chunk, number * batch, per_child),
                        id=run.child_id(number),
                        result_type=ExecutionSnapshot,
                        search_attributes=run.attributes,
                    )
                except ChildWorkflowError as exc:
                    raise StepFailed(_child_error(step.id, exc)) from None
                return snapshot.output

        tasks = [asyncio.create_task(run_chunk(n, chunk)) for n, chunk in enumerate(chunks)]
        await _all_or_first_failure(tasks)
        return self._slice_outputs(step, [task.result() for task in tasks])

    def _slice_run(self, step: Step, batch: int, name: str) -> _SliceRun:
        """How a slice of ``step``'s items runs as a child: a one-step definition (the loop over the slice)
        with the enclosing scope's outputs, vars and loop bindings as its context."""
        body_step = step.model_dump(
            by_alias=True, exclude_none=True, exclude={"when", "output", "depends_on", "optional", "on_error"}
        )
        body_step.update({"items": "{{ input.items }}", "batch_size": batch})
        scope = self._scope()
        return _SliceRun(
            step=step.id,
            body_step=body_step,
            execution=self._request,
            context={
                "steps": {
                    k: {"output": v.get("output"), "status": v.get("status")}
                    for k, v in scope.steps().items()
                },
                "vars": self._vars,
                "bindings": scope.bindings(),
            },
            id_prefix=f"{self._execution['id']}{scope.path}/{name}",
            attributes=_child_attributes(self._request.name, self._request.version),
        )

    def _slice_outputs(self, step: Step, outputs: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
        """The slices' ``{results, failed}`` joined in item order."""
        results: list[Any] = []
        failed: list[dict[str, Any]] = []
        for part in outputs:
            if not isinstance(part, dict) or not isinstance(part.get("results"), list):
                raise self._config_error(step, "a foreach batch ended without its results (a succeed step?)")
            results += part["results"]
            failed += part.get("failed") or []
        return results, failed

    def _seconds(self, step: Step, value: Any, field: str) -> float:
        """A rendered duration as seconds; anything else fails the step rather than the workflow task."""
        try:
            seconds = parse_duration(value)
            timedelta(seconds=seconds)  # refuses what a timer could not hold
        except (ValueError, TypeError, OverflowError) as exc:
            raise self._config_error(step, f"{field}: {exc}") from None
        if seconds > MAX_SECONDS:
            raise self._config_error(step, f"{field}: {seconds:g} s is longer than ten years")
        return seconds

    def _config_error(self, step: Step, message: str) -> StepFailed:
        return StepFailed(StepError(code=errors.CONFIG_INVALID, message=message, step=step.id))

    async def _run_switch(self, step: Step) -> dict[str, Any]:
        for i, case in enumerate(step.cases or ()):
            if expressions.truthy(self._render(step, case.when, f"cases[{i}].when")):
                await self._run_block(case.steps)
                return {"case": i}
        if step.default:
            await self._run_block(step.default)
        return {"case": "default"}

    async def _run_delay(self, step: Step) -> None:
        config = self._config(step, DelayConfig)
        if config.until is not None:
            try:
                until = datetime.fromisoformat(config.until)
            except ValueError:
                raise StepFailed(
                    StepError(
                        code=errors.CONFIG_INVALID,
                        message=f"until: {config.until!r} is not ISO 8601",
                        step=step.id,
                    )
                ) from None
            if until.tzinfo is None:  # a time without an offset is UTC, as workflow time is
                until = until.replace(tzinfo=UTC)
            seconds = (until - workflow.now()).total_seconds()
        else:
            seconds = self._seconds(step, config.duration or 0, "with.duration")
        if seconds > 0:
            await workflow.sleep(timedelta(seconds=seconds), summary=step.id)

    async def _run_stage(self, step: Step, record: StepRecord) -> Any:
        """A pipeline stage: the processor runs on the stage's task queue; the item's ``ConveyorStage``
        says where it is, so the queue of items at a stage is a visibility query."""
        rendered = self._render(step, step.with_, "with")
        config: StageConfig = self._config(step, StageConfig, rendered)
        heartbeat = self._seconds(step, config.heartbeat_timeout, "heartbeat_timeout")
        workflow.upsert_search_attributes([names.SA_STAGE.value_set(config.stage)])
        self._event("stage_entered", step.id, {"stage": config.stage, "label": config.label})
        self._stage_names[step.id] = config.stage
        visit = _StageVisit(step.id, config.stage)
        self._visits.append(visit)
        try:
            output = await self._run_activity(
                step,
                "stage",
                record,
                rendered=rendered,
                task_queue=config.task_queue or stage_queue(config.stage),
                heartbeat_timeout=timedelta(seconds=heartbeat),
                seconds=step.timeout or STAGE_TIMEOUT_S,
                visit=visit,
            )
        except asyncio.CancelledError:
            if visit.advanced is None:
                visit.settled = "cancelled"
                raise
            visit.settled = "advanced"
            actor = visit.advanced.actor or "an operator"
            self._log("info", f"advanced past stage {config.stage} by {actor}", step.id)
            return visit.advanced.output
        except BaseException:
            visit.settled = "failed"
            raise
        finally:
            self._visits.remove(visit)
        visit.settled = "completed"
        return output

    async def _run_activity(
        self,
        step: Step,
        activity: str,
        record: StepRecord,
        *,
        rendered: dict[str, Any] | None = None,
        task_queue: str | None = None,
        heartbeat_timeout: timedelta | None = None,
        seconds: float | None = None,
        visit: _StageVisit | None = None,
    ) -> Any:
        config = self._render(step, step.with_, "with") if rendered is None else rendered
        self._config(step, STEP_TYPES[step.type].config, config)
        defaults = self._definition.defaults
        retry = defaults.retry
        if step.retry is not None:
            # A step's retry overrides only the fields it names; the rest still come from the defaults.
            retry = retry.model_copy(update={f: getattr(step.retry, f) for f in step.retry.model_fields_set})
        handle = workflow.start_activity(
            activity,
            StepRequest(
                execution_id=self._execution["id"],
                step_id=step.id,
                config=config,
                retry={
                    "initial_interval": retry.initial_interval,
                    "backoff": retry.backoff,
                    "max_interval": max(retry.max_interval, retry.initial_interval),
                },
                definition=self._request.name if step.type == "stage" else None,
            ),
            result_type=StepOutcome,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=seconds or step.timeout or defaults.timeout),
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=_retry_policy(retry),
            summary=step.id,
        )
        if visit is not None:
            visit.handle = handle
        try:
            outcome = await handle
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError) and workflow.patched(PATCH_CANCELLED_ACTIVITY):
                # Only this workflow cancels its activities (a failed sibling, or the execution being
                # cancelled), so the step was cancelled, not failed.
                raise asyncio.CancelledError() from None
            exhausted = exc.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
            record.attempts = retry.max_attempts if exhausted else max(record.attempts, 1)
            error = _activity_error(step.id, exc)
            self._log("error", f"{error.code}: {error.message} (attempts: {record.attempts})", step.id)
            raise StepFailed(error) from None
        record.attempts = outcome.attempt
        for line in outcome.logs:
            self._log(
                str(line.get("level", "info")), str(line.get("message", "")), step.id, line.get("metadata")
            )
        if outcome.attempt > 1:
            self._log("info", f"succeeded on attempt {outcome.attempt}", step.id)
        return outcome.output

    async def _publish(self, event: str, data: dict[str, Any]) -> None:
        """An execution event for event triggers, when the API saw one listening at the start."""
        if not self._request.emit_lifecycle:
            return
        payload = {"definition": self._request.name, "version": self._request.version,
                   "execution_id": self._execution["id"], **data}  # fmt: skip
        try:
            await workflow.execute_activity(
                "emit",
                StepRequest(
                    execution_id=self._execution["id"],
                    step_id="(execution)",
                    config={"event": event, "data": payload},
                ),
                result_type=StepOutcome,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
                summary=event,
            )
        except ActivityError as exc:
            self._log("error", f"could not publish {event}: {exc.cause or exc}", None)

    async def _run_cleanup(self) -> None:
        """The definition's ``on_error`` steps; their own failures are recorded, never raised."""
        if not self._definition.on_error:
            return
        try:
            await self._run_block(self._definition.on_error)
        except (StepFailed, EndExecution):
            workflow.logger.warning("on_error steps failed", extra={"execution": self._execution["id"]})

    # -- helpers -----------------------------------------------------------------------------------------

    def _config(self, step: Step, model: Any, rendered: dict[str, Any] | None = None) -> Any:
        values = self._render(step, step.with_, "with") if rendered is None else rendered
        try:
            return parse_config(model, values)
        except ValueError as exc:
            raise StepFailed(StepError(code=errors.CONFIG_INVALID, message=str(exc), step=step.id)) from None

    def _task_allowance(self) -> TaskAllowance:
        """The allowance of the workflow task running now, a fresh one for each task.

        A task is told apart by the history length it runs at, which a replay sees the same: every render
        happens in the workflow's own coroutines (none in queries or update validators, which a replay
        skips), so a replay spends the same allowances in the same order and fails at the same render.
        """
        task = workflow.info().get_current_history_length()
        if self._renders is None or self._renders.task != task:
            self._renders = TaskAllowance(task)
        return self._renders

    def _render(self, step: Step | None, value: Any, where: str, **extra: Any) -> Any:
        """``value`` rendered for ``step`` (None: the definition itself); errors fail the step."""
        scope = self._scope()
        context: dict[str, Any] = {
            "input": self._request.input,
            "steps": scope.steps(),
            "vars": self._vars,
            "execution": self._execution,
            "secrets": expressions.SECRETS,
            "error": _error_view(self._error) if self._error else None,
            **scope.bindings(),
            **extra,
        }
        limited = workflow.patched(PATCH_TEMPLATE_BOUNDS)
        task = self._task_allowance() if limited else None
        try:
            return expressions.render(value, context, limited=limited, task=task)
        except expressions.ExpressionError as exc:
            raise StepFailed(
                StepError(
                    code=errors.EXPRESSION_FAILED,
                    message=f"{where}: {exc}",
                    step=step.id if step is not None else None,
                )
            ) from None

    def _finish(
        self, record: StepRecord, status: str, error: StepError | None = None, output: Any = None
    ) -> None:
        record.status = status
        record.error = error
        if record.started_at is not None:
            record.closed_at = self._now()
        scope = self._scope()
        if scope.records.get(record.id) is not record:  # e.g. skip() from an update handler
            scope = self._top
        scope.view[record.id] = {
            "status": status,
            "output": output,
            "error": _error_view(error) if error else None,
        }
        kind = _STEP_EVENTS.get(status)
        if kind is not None and not scope.quiet:
            data: dict[str, Any] = {"status": status}
            if error is not None:
                data["error"] = _error_view(error)
            self._event(kind, record.id, data)

    def _skip_unrun(self) -> None:
        """As the execution closes: steps that never started will not run now, so they are skipped (a
        switch's other branches, steps after a ``succeed`` or a failure, ``on_error`` steps of a run that
        did not fail), not left ``pending`` as if they might."""
        for record in self._records.values():
            if record.status == "pending":
                self._finish(record, "skipped")

    def _final_output(self) -> Any:
        if self._definition.output is not None:
            return self._render(None, self._definition.output, "output")
        for step in reversed(self._definition.steps):
            view = self._steps_view.get(step.id)
            if view and view["status"] in {"completed", "recovered"}:
                return view["output"]
        return None

    def _move(
        self,
        target: ExecutionState,
        reason: str,
        *,
        at: str | None = None,
        step: str | None = None,
        actor: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        check_transition(self._state, target)
        self._transitions.append(
            Transition(
                from_state=self._state.value,
                to_state=target.value,
                at=at or self._now(),
                reason=reason,
                step=step,
                actor=actor,
                metadata=metadata or {},
            )
        )
        self._state = target
        if target is not ExecutionState.QUEUED:  # QUEUED is set by the client when it starts the run
            workflow.upsert_search_attributes([names.SA_STATE.value_set(target.value)])

    def _event(self, kind: str, step: str | None = None, data: dict[str, Any] | None = None) -> None:
        seq = self._events[-1].seq + 1 if self._events else 1
        self._events.append(ExecutionEvent(seq=seq, type=kind, at=self._now(), step=step, data=data or {}))
        if len(self._events) > MAX_EVENTS:
            del self._events[0]

    def _log(self, level: str, message: str, step: str | None, metadata: Any = None) -> None:
        seq = self._logs[-1].seq + 1 if self._logs else 1
        meta = metadata if isinstance(metadata, dict) else {}
        self._logs.append(
            LogEntry(seq=seq, at=self._now(), level=level, message=message, step=step, metadata=meta)
        )
        if len(self._logs) > MAX_EVENTS:
            del self._logs[0]

    @staticmethod
    def _now() -> str:
        return workflow.now().isoformat()


_ACTIVITY_LOGGED = frozenset(name for name, spec in STEP_TYPES.items() if spec.activity is not None)
"""Step types whose failures the activity path logs already (with the attempts)."""

_STEP_EVENTS = {
    "completed": "step_completed",
    "recovered": "step_completed",
    "failed": "step_failed",
    "skipped": "step_skipped",
}


async def _all_or_first_failure(
    tasks: list[asyncio.Task[Any]], *, fail_fast: bool = True, raise_first: bool = True
) -> None:
    """Wait for every task; with ``fail_fast`` the first failure cancels the others (and, with
    ``raise_first``, is raised here). Cancelled siblings are awaited, so their cleanup is recorded."""
    try:
        done, _ = await workflow.wait(
            tasks, return_when=asyncio.FIRST_EXCEPTION if fail_fast else asyncio.ALL_COMPLETED
        )
        # Read every finished task's exception, so two failing at once leave no "never retrieved" warning.
        failures = {t: t.exception() for t in done if not t.cancelled()}
        if raise_first:
            broken = next((t for t in tasks if failures.get(t) is not None), None)
            if broken is not None:
                raise broken.exception()  # type: ignore[misc]
    finally:
        pending = [t for t in tasks if not t.done()] if _on_its_loop() else []
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _cancel_child(handle: workflow.ChildWorkflowHandle[Any, Any]) -> None:
    """Ask a running child to cancel, and wait until Temporal has recorded the request: an answer still on
    its way when the workflow closes fails the closing task (UNHANDLED_COMMAND) and costs a full replay."""
    if handle.done():
        return
    external = workflow.get_external_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    with contextlib.suppress(FailureError):  # it ended before the request reached it
        await external.cancel()


def _on_its_loop() -> bool:
    """False while Python closes a run's coroutines from outside its event loop.

    A worker that stops leaves the runs in its cache to the garbage collector (Temporal's SDK evicts only
    runs with pending work), which throws ``GeneratorExit`` into each suspended coroutine. ``finally`` blocks
    then run where nothing may be awaited and no workflow API works; the cleanup they do is skipped (and
    nothing is lost: the run goes on from its history on another worker, where the cleanup happens).
    """
    return workflow.in_workflow()


def _all_ids(step: Step) -> list[str]:
    """A step's id and those of every step nested in it, loop bodies included."""
    return [step.id] + [i for _, children in step.children() for child in children for i in _all_ids(child)]


def _tracked(step: Step) -> list[tuple[str, str]]:
    """(id, type) of a step and the steps nested in it that the execution records, which leaves out
    ``foreach`` bodies: each iteration keeps its own records."""
    found = [(step.id, step.type)]
    for path, children in step.children():
        if step.type == "foreach" and path == "steps":
            continue
        for child in children:
            found += _tracked(child)
    return found


def _tolerates_failure(step: Step) -> bool:
    return step.optional or step.on_error == "continue"


def _downstream(block: tuple[Step, ...], start: str) -> set[str]:
    """``start`` and every step of ``block`` that waits for it, directly or not."""
    waits_for = dependencies(block)
    found = {start}
    changed = True
    while changed:
        changed = False
        for step_id, deps in waits_for.items():
            if step_id not in found and found.intersection(deps):
                found.add(step_id)
                changed = True
    return found


def _child_attributes(name: str, version: int) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(names.SA_DEFINITION, name),
            SearchAttributePair(names.SA_VERSION, version),
            SearchAttributePair(names.SA_STATE, ExecutionState.QUEUED.value),
        ]
    )


def _child_error(step_id: str, exc: ChildWorkflowError) -> StepError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return StepError(code=cause.type or "ChildFailed", message=cause.message, step=step_id)
    if isinstance(cause, CancelledError):
        return StepError(code=errors.CANCELLED, message="child execution cancelled", step=step_id)
    return StepError(code="ChildFailed", message=str(cause or exc), step=step_id)


def _error_view(error: StepError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "step": error.step}


def _retry_policy(spec: RetrySpec) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=spec.initial_interval),
        backoff_coefficient=spec.backoff,
        maximum_interval=timedelta(seconds=max(spec.max_interval, spec.initial_interval)),
        maximum_attempts=spec.max_attempts,
        non_retryable_error_types=[*errors.NON_RETRYABLE, *spec.non_retryable],
    )


def _activity_error(step_id: str, exc: ActivityError) -> StepError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        details: Mapping[str, Any] = (
            cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        )
        return StepError(
            code=cause.type or "ActivityError",
            message=cause.message,
            step=step_id,
            details=dict(details) or None,
        )
    if isinstance(cause, TimeoutError):
        return StepError(
            code=errors.STEP_TIMEOUT,
            message=f"timed out ({cause.type.name if cause.type else ''})",
            step=step_id,
        )
    if isinstance(cause, CancelledError):
        return StepError(code=errors.CANCELLED, message="activity cancelled", step=step_id)
    return StepError(code="ActivityError", message=str(cause or exc), step=step_id)
