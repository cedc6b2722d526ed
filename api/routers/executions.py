"""Executions: start (idempotent per caller id), list, read, history, cancel, terminate."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from api.auth import Operator, Viewer
from api.deps import SessionDep, SettingsDep, TemporalDep
from core import control
from core import executions as service

router = APIRouter(prefix="/api/v1", tags=["executions"])


class StartRequest(BaseModel):
    input: dict[str, Any] = Field(
        default_factory=dict, description="validated against the definition's input schema"
    )
    version: int | None = Field(default=None, ge=1, description="a version other than the active one")
    id: str | None = Field(
        default=None, description="your idempotency key: the same id again returns the same execution"
    )
    wait: float | None = Field(
        default=None, ge=0, description="seconds to wait for the result before answering (capped by settings)"
    )


class ProblemView(BaseModel):
    """Why a running execution cannot progress: its workflow task keeps failing (Temporal's reason)."""

    category: str = Field(description="WorkflowTaskFailed or WorkflowTaskTimedOut")
    cause: str | None = Field(
        description="Temporal's cause, e.g. WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure "
        "(an exception in workflow code) or WorkflowTaskFailedCauseNonDeterministicError"
    )
    message: str | None = Field(default=None, description="the failure's message; not in lists")
    failed_attempts: int | None = Field(
        default=None, description="workflow task attempts failed since the last good one; not in lists"
    )
    since: str | None = Field(default=None, description="when the first of them failed; not in lists")


class StartResponse(BaseModel):
    execution_id: str
    run_id: str | None
    definition: str
    version: int
    state: str
    created: bool
    output: Any = None
    error: dict[str, Any] | None = None
    problem: ProblemView | None = Field(
        default=None, description="set when a `wait` ran out on an execution that cannot progress"
    )


class StepView(BaseModel):
    id: str
    type: str
    status: str
    attempts: int
    started_at: str | None
    closed_at: str | None
    error: dict[str, Any] | None


class ExecutionView(BaseModel):
    execution_id: str
    run_id: str | None
    definition: str | None
    version: int | None
    state: str
    temporal_status: str | None
    stage: str | None
    current_step: str | None
    steps: list[StepView]
    input: Any
    output: Any
    error: dict[str, Any] | None
    retry_count: int
    problem: ProblemView | None = Field(description="null while the execution can progress")
    started_at: str | None
    closed_at: str | None


class ExecutionRow(BaseModel):
    execution_id: str
    run_id: str
    definition: str | None
    version: int | None
    state: str | None
    stage: str | None
    trigger: str | None
    temporal_status: str | None
    problem: ProblemView | None = Field(description="category and cause while it cannot progress")
    started_at: str
    closed_at: str | None


class ExecutionPage(BaseModel):
    executions: list[ExecutionRow]
    next_page_token: str | None


class TransitionView(BaseModel):
    from_state: str
    to_state: str
    at: str
    reason: str
    step: str | None
    stage: str | None
    actor: str | None
    metadata: dict[str, Any]


class ControlResponse(BaseModel):
    execution_id: str
    result: str


class TerminateRequest(BaseModel):
    reason: str = ""


@router.post(
    "/definitions/{name}/executions",
    status_code=201,
    response_model=StartResponse,
    responses={200: {"model": StartResponse, "description": "an execution with this id exists already"}},
)
async def start_execution(
    name: str,
    request: StartRequest,
    response: Response,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    caller: Operator,
) -> StartResponse:
    """Start an execution of the active (or a named) version; with ``wait``, answer with its result."""
    started = await service.start_execution(
        session,
        temporal,
        task_queue=settings.task_queue,
        name=name,
        input=request.input,
        version=request.version,
        caller_id=request.id,
        actor=caller.name,
    )
    if request.wait:
        started = await service.wait_for_result(temporal, started, min(request.wait, settings.max_wait_s))
    if not started.created:
        response.status_code = 200
    return StartResponse(**asdict(started))


@router.get("/executions", response_model=ExecutionPage)
async def list_executions(
    temporal: TemporalDep,
    _caller: Viewer,
    definition: str | None = None,
    state: str | None = None,
    stage: str | None = None,
    stuck: bool = Query(False, description="only executions whose workflow task keeps failing"),
    limit: int = Query(50, ge=1, le=1000),
    page_token: str | None = None,
) -> ExecutionPage:
    """Executions, newest first, filtered through Temporal visibility."""
    page = await service.list_executions(
        temporal,
        definition=definition,
        state=state,
        stage=stage,
        stuck=stuck,
        limit=limit,
        page_token=page_token,
    )
    return ExecutionPage(
        executions=[ExecutionRow(**row) for row in page.executions], next_page_token=page.next_page_token
    )


class RetryBody(BaseModel):
    from_step: str | None = Field(default=None, description="a top-level step to run again from")
    input_patch: dict[str, Any] | None = Field(
        default=None, description="JSON Merge Patch applied to the input first (null deletes a key)"
    )


class SkipBody(BaseModel):
    output: Any = Field(default=None, description="the output the skipped step is to have")


class SuspendBody(BaseModel):
    reason: str = ""


class SignalBody(BaseModel):
    payload: Any = None


class ControlAnswer(BaseModel):
    execution_id: str
    state: str
    message: str


class BulkFilterBody(BaseModel):
    definition: str | None = None
    state: str | None = None
    stage: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None


class BulkBody(BaseModel):
    filter: BulkFilterBody = Field(default_factory=BulkFilterBody)
    dry_run: bool = Field(default=True, description="count what matches, change nothing (the default)")


class BulkAnswer(BaseModel):
    action: str
    matched: int
    dry_run: bool
    succeeded: int
    failed: list[dict[str, Any]]
    execution_ids: list[str]


@router.post("/executions/bulk/{action}", response_model=BulkAnswer)
async def bulk_action(
    action: Literal["retry", "cancel", "resume"], body: BulkBody, temporal: TemporalDep, caller: Operator
) -> BulkAnswer:
    """Retry, cancel or resume every execution matching the filter; ``dry_run`` (default) only counts."""
    report = await control.bulk(
        temporal,
        action,
        control.BulkFilter(**body.filter.model_dump()),
        dry_run=body.dry_run,
        actor=caller.name,
    )
    return BulkAnswer(**asdict(report))


# Execution ids hold a "/" (``<definition>/<id>``), so the id is a path parameter and the routes with a
# suffix are declared before the bare one, which would otherwise swallow them.


@router.get("/executions/{execution_id:path}/history", response_model=list[TransitionView])
async def execution_history(
    temporal: TemporalDep, _caller: Viewer, execution_id: str
) -> list[TransitionView]:
    """Every state transition: from, to, step, reason, actor, time."""
    return [TransitionView(**_plain(t)) for t in await service.execution_history(temporal, execution_id)]


@router.post("/executions/{execution_id:path}/cancel", response_model=ControlResponse, status_code=202)
async def cancel_execution(temporal: TemporalDep, caller: Operator, execution_id: str) -> ControlResponse:
    """Request cancellation: running steps are cancelled, then the definition's on_error steps run."""
    result = await service.cancel_execution(temporal, execution_id, actor=caller.name)
    return ControlResponse(execution_id=execution_id, result=result)


@router.post("/executions/{execution_id:path}/terminate", response_model=ControlResponse)
async def terminate_execution(
    temporal: TemporalDep,
    _caller: Operator,
    execution_id: str,
    request: TerminateRequest = Body(default_factory=TerminateRequest),
) -> ControlResponse:
    """Stop at once: nothing more runs, not even cleanup steps."""
    result = await service.cancel_execution(temporal, execution_id, terminate=True, reason=request.reason)
    return ControlResponse(execution_id=execution_id, result=result)


@router.post("/executions/{execution_id:path}/retry", response_model=ControlAnswer)
async def retry_execution(
    temporal: TemporalDep,
    caller: Operator,
    execution_id: str,
    body: RetryBody = Body(default_factory=RetryBody),
) -> ControlAnswer:
    """SUSPENDED: run the failed step (or ``from_step``) again, with the input patched; closed: a new run."""
    result = await control.retry_execution(
        temporal, execution_id, from_step=body.from_step, input_patch=body.input_patch, actor=caller.name
    )
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


@router.post("/executions/{execution_id:path}/skip", response_model=ControlAnswer)
async def skip_step(
    temporal: TemporalDep,
    caller: Operator,
    execution_id: str,
    body: SkipBody = Body(default_factory=SkipBody),
) -> ControlAnswer:
    """SUSPENDED: go on past the failed step, which takes ``output``."""
    result = await control.skip_step(temporal, execution_id, output=body.output, actor=caller.name)
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


class AdvanceBody(BaseModel):
    stage: str = Field(
        min_length=1,
        max_length=63,
        description="the stage the item is at (a repeat then cannot skip the next)",
    )
    output: Any = Field(default=None, description="the output the stage is to have")


@router.post("/executions/{execution_id:path}/advance", response_model=ControlAnswer)
async def advance_item(
    temporal: TemporalDep, caller: Operator, execution_id: str, body: AdvanceBody
) -> ControlAnswer:
    """A pipeline item at ``stage`` (queued, being worked on, or parked there): move it past that stage by
    hand; the stage takes ``output`` as its output. 409 ``INVALID_STATE`` when the item is not at that stage
    or the stage finished first."""
    result = await control.advance(
        temporal, execution_id, stage=body.stage, output=body.output, actor=caller.name
    )
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


@router.post("/executions/{execution_id:path}/suspend", response_model=ControlAnswer)
async def suspend_execution(
    temporal: TemporalDep,
    caller: Operator,
    execution_id: str,
    body: SuspendBody = Body(default_factory=SuspendBody),
) -> ControlAnswer:
    """Park a running execution at its next step boundary, until ``resume``."""
    result = await control.suspend_execution(temporal, execution_id, reason=body.reason, actor=caller.name)
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


@router.post("/executions/{execution_id:path}/resume", response_model=ControlAnswer)
async def resume_execution(temporal: TemporalDep, caller: Operator, execution_id: str) -> ControlAnswer:
    """Continue an execution parked by ``suspend``."""
    result = await control.resume_execution(temporal, execution_id, actor=caller.name)
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


@router.post("/executions/{execution_id:path}/signals/{name}", response_model=ControlAnswer, status_code=202)
async def signal_execution(
    temporal: TemporalDep,
    _caller: Operator,
    execution_id: str,
    name: str,
    body: SignalBody = Body(default_factory=SignalBody),
) -> ControlAnswer:
    """Send a named signal (as ``temporal workflow signal --name``), e.g. ``approve`` for a ``wait`` step."""
    await control.signal_execution(temporal, execution_id, name, body.payload)
    return ControlAnswer(execution_id=execution_id, state="", message=f"signal {name} sent")


@router.post("/executions/{execution_id:path}/updates/{name}", response_model=ControlAnswer)
async def update_execution(
    temporal: TemporalDep,
    _caller: Operator,
    execution_id: str,
    name: str,
    body: SignalBody = Body(default_factory=SignalBody),
) -> ControlAnswer:
    """Resolve a ``wait`` step by a named update: refused (409/422) unless a wait expects it and the
    payload fits its schema; nothing is recorded when it is refused."""
    result = await control.decide(temporal, execution_id, name, body.payload)
    return ControlAnswer(execution_id=execution_id, state=result.state, message=result.message)


@router.get("/executions/{execution_id:path}", response_model=ExecutionView)
async def get_execution(temporal: TemporalDep, _caller: Viewer, execution_id: str) -> ExecutionView:
    """State, per-step status, input, output and error of one execution."""
    return ExecutionView(**await service.describe_execution(temporal, execution_id))


def _plain(value: Any) -> dict[str, Any]:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else dict(value)
