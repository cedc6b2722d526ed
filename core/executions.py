"""Starting, reading and controlling executions through Temporal (the client side of the interpreter)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.db import store_key
from core.definitions import pinned_children, runnable_version
from core.errors import BadRequest, Conflict, NotFound, Unavailable
from core.inputs import prepare_input
from core.listeners import anyone_listens_to_executions
from core.models import ExecutionRecord
from core.problems import STUCK_CLAUSE, Problem, execution_problem, reported_problem
from workflows.definition import Definition
from workflows.messages import (
    CancelRequest,
    ChildDefinition,
    ExecutionInput,
    ExecutionSnapshot,
)
from workflows.states import ExecutionState

_QUERY_TIMEOUT = timedelta(seconds=5)
CALLER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")

_STATUS_STATE = {
    WorkflowExecutionStatus.COMPLETED: ExecutionState.COMPLETED,
    WorkflowExecutionStatus.FAILED: ExecutionState.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: ExecutionState.FAILED,
    WorkflowExecutionStatus.CANCELED: ExecutionState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: ExecutionState.CANCELLED,
}


@dataclass
class Started:
    """An execution as a start request sees it."""

    execution_id: str
    run_id: str | None
    definition: str
    version: int
    state: str
    created: bool
    output: Any = None
    error: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    """Why it cannot progress, when a wait ran out on an execution whose workflow task keeps failing."""


@dataclass(frozen=True)
class _Plan:
    """What starting a version needs, worked out once per version: versions never change."""

    version: int
    document: dict[str, Any]
    definition: Definition
    children: dict[str, ChildDefinition]
    stage_attributes: list[SearchAttributePair[Any]]
    """A pipeline's items start at stage NEW; other executions have no stage."""


_PLAN_TTL_S = 1.0
"""How long a process trusts its idea of a definition's active version (a publish shows within this)."""
_plans: dict[tuple[str, str, int | None], tuple[float, _Plan]] = {}
"""Keyed by store too: versions are immutable within one store, not across the stores of a test run."""


async def plan_for(session: AsyncSession, name: str, version: int | None) -> _Plan:
    store = store_key(session)
    key = (store, name, version)
    cached = _plans.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    chosen = await runnable_version(session, name=name, version=version)
    pinned = _plans.get((store, name, -chosen.version))  # the parsed version, kept beyond the TTL
    definition = pinned[1].definition if pinned else Definition.model_validate(chosen.document)
    # The versions its sub_workflow steps run are looked up again with the TTL: a child's publish shows.
    children = await pinned_children(session, document=chosen.document)
    pipeline = any(step.type == "stage" for _, step in definition.all_steps())
    plan = _Plan(
        version=chosen.version,
        document=chosen.document,
        definition=definition,
        children=children,
        stage_attributes=[SearchAttributePair(names.SA_STAGE, names.STAGE_NEW)] if pipeline else [],
    )
    _plans[(store, name, -chosen.version)] = (float("inf"), plan)
    _plans[key] = (time.monotonic() + _PLAN_TTL_S, plan)
    return plan


def forget_plans(name: str) -> None:
    """Drop this process's cached active version of ``name`` (after a publish or an archive)."""
    for key in [k for k in _plans if k[1] == name and (k[2] is None or k[2] >= 0)]:
        _plans.pop(key, None)


async def start_execution(
    session: AsyncSession,
    client: Client,
    *,
    task_queue: str,
    name: str,
    input: dict[str, Any],
    version: int | None = None,
    caller_id: str | None = None,
    trigger: str = "api",
    actor: str | None = None,
    record_also: Sequence[SQLModel] = (),
) -> Started:
    """Start ``name`` once per ``caller_id``: the same id again returns the execution it started.

    Temporal itself refuses a second run under the same workflow id (FAIL, REJECT_DUPLICATE), so the start
    comes first and the SQL record after it, in one commit with ``record_also``: the one call whose start
    Temporal accepted answers "created"; every concurrent or later repeat gets the same execution, also one
    whose record a crash between the start and the commit lost (it writes the record then). The record
    outlives Temporal's retention, so a repeat after that is still recognised.
    """
    if caller_id is not None and not CALLER_ID.match(caller_id):
        raise BadRequest("INVALID_ID", "id may hold 1-128 letters, digits and . _ : @ -", {"field": "id"})
    workflow_id = f"{name}/{caller_id or uuid.uuid4()}"
    if caller_id is not None:
        existing = await session.get(ExecutionRecord, workflow_id)
        if existing is not None:
            return await _repeat(client, existing)
    plan = await plan_for(session, name, version)
    prepared = prepare_input(plan.definition.input, input)
    timeout = plan.definition.limits.timeout
    try:
        handle = await client.start_workflow(
            names.DEFINITION_WORKFLOW,
            ExecutionInput(
                definition=plan.document,
                name=name,
                version=plan.version,
                input=prepared,
                trigger=trigger,
                actor=actor,
                children=plan.children,
                emit_lifecycle=await anyone_listens_to_executions(session),
            ),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=timeout) if timeout else None,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.SA_DEFINITION, name),
                    SearchAttributePair(names.SA_VERSION, plan.version),
                    SearchAttributePair(names.SA_STATE, ExecutionState.QUEUED.value),
                    SearchAttributePair(names.SA_TRIGGER, trigger),
                    *plan.stage_attributes,
                ]
            ),
            result_type=ExecutionSnapshot,
        )
        answer = Started(
            workflow_id, handle.result_run_id, name, plan.version, ExecutionState.QUEUED.value, created=True
        )
    except WorkflowAlreadyStartedError as exc:
        # Running, or closed within Temporal's retention: a repeat, perhaps of a start whose record a crash
        # lost. That run is the answer, and its record is written now.
        answer = await _started_before(client, workflow_id, exc.run_id, name, plan.version)
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", f"could not start the execution: {exc.message}") from exc
    record = ExecutionRecord(
        workflow_id=workflow_id,
        run_id=answer.run_id,
        definition=name,
        version=answer.version,
        trigger=trigger,
    )
    session.add(record)
    session.add_all(record_also)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()  # a concurrent repeat recorded the same execution first
    return answer


async def _started_before(
    client: Client, workflow_id: str, run_id: str | None, name: str, version: int
) -> Started:
    """The run Temporal already holds under ``workflow_id``, with the version it runs."""
    try:
        description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    except RPCError:
        return Started(workflow_id, run_id, name, version, ExecutionState.QUEUED.value, created=False)
    running = description.typed_search_attributes.get(names.SA_VERSION) or version
    return Started(workflow_id, run_id, name, running, state_of(description), created=False)


async def _repeat(client: Client, existing: ExecutionRecord) -> Started:
    state = await _current_state(client, existing.workflow_id)
    return Started(
        existing.workflow_id, existing.run_id, existing.definition, existing.version, state, created=False
    )


async def wait_for_result(client: Client, started: Started, seconds: float) -> Started:
    """``started`` updated with the outcome once the execution closes, or parks for an operator (SUSPENDED,
    with its error), within ``seconds``; after that, with its state and any error so far."""
    handle = client.get_workflow_handle(started.execution_id, result_type=ExecutionSnapshot)
    try:
        async with asyncio.timeout(seconds):
            snapshot = await _closed_or_parked(handle)
    except TimeoutError:
        try:
            description = await handle.describe()
        except RPCError:
            return started
        snapshot, problem = await asyncio.gather(
            _so_far(handle, description), execution_problem(client, description)
        )
        started.problem = _plain(problem)
    started.state = snapshot.get("state", started.state)
    started.output = snapshot.get("output")
    started.error = snapshot.get("error")
    return started


_PARKED_POLL_S = (0.25, 2.0)
"""The first look at a waiting start's execution for SUSPENDED, and the longest gap between looks: a run
that closes at once (the common start with ``wait``) is answered by its result before the first look."""


async def _closed_or_parked(handle: WorkflowHandle[Any, ExecutionSnapshot]) -> dict[str, Any]:
    closed = asyncio.create_task(_closed_snapshot(handle))
    parked = asyncio.create_task(_until_parked(handle))
    try:
        await asyncio.wait({closed, parked}, return_when=asyncio.FIRST_COMPLETED)
        description = None if closed.done() else await parked
        if description is None:
            return await closed
        return await _so_far(handle, description)
    finally:
        for task in (closed, parked):
            task.cancel()
        await asyncio.gather(closed, parked, return_exceptions=True)


async def _until_parked(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription | None:
    """The execution's description once it is SUSPENDED; None when it closed first or is gone.

    It describes the execution now and then rather than asking the workflow: the ``ConveyorState`` a
    describe returns is the execution's own (not the visibility store's, which lags), and a describe leaves
    nothing in the workflow when the caller stops waiting. (An update that answers on SUSPENDED did: each
    stayed in flight until then, and Temporal's limit of in-flight updates per execution then refused the
    operator's own.)
    """
    gap, longest = _PARKED_POLL_S
    while True:
        await asyncio.sleep(gap)
        gap = min(gap * 2, longest)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            continue  # Temporal briefly unreachable: the result's long poll rides it out too
        if description.status != WorkflowExecutionStatus.RUNNING:
            return None
        if description.typed_search_attributes.get(names.SA_STATE) == ExecutionState.SUSPENDED.value:
            return description


async def _so_far(
    handle: WorkflowHandle[Any, ExecutionSnapshot], description: WorkflowExecutionDescription
) -> dict[str, Any]:
    """The execution's snapshot as it is now, its state resolved."""
    snapshot = await _snapshot(handle, description)
    # A closed run's Temporal status is the truth (a terminated run never recorded its own end).
    closed = _STATUS_STATE.get(description.status) if description.status else None
    return {**snapshot, "state": closed.value if closed else snapshot.get("state") or state_of(description)}


async def describe_execution(client: Client, execution_id: str) -> dict[str, Any]:
    """Everything API.md's ``GET /executions/{id}`` shows."""
    handle = client.get_workflow_handle(execution_id, result_type=ExecutionSnapshot)
    description = await describe_handle(handle)
    snapshot, problem = await asyncio.gather(
        _so_far(handle, description), execution_problem(client, description)
    )
    return {
        "execution_id": execution_id,
        "run_id": description.run_id,
        "definition": snapshot.get("definition")
        or description.typed_search_attributes.get(names.SA_DEFINITION),
        "version": snapshot.get("version") or description.typed_search_attributes.get(names.SA_VERSION),
        "state": snapshot["state"],
        "temporal_status": description.status.name if description.status else None,
        "stage": description.typed_search_attributes.get(names.SA_STAGE),
        "current_step": snapshot.get("current_step"),
        "steps": snapshot.get("steps", []),
        "input": snapshot.get("input"),
        "output": snapshot.get("output"),
        "error": snapshot.get("error"),
        "retry_count": snapshot.get("retry_count", 0),
        "problem": _plain(problem),
        "started_at": description.start_time.isoformat() if description.start_time else None,
        "closed_at": description.close_time.isoformat() if description.close_time else None,
    }


async def execution_history(client: Client, execution_id: str) -> list[dict[str, Any]]:
    """The recorded state transitions of an execution."""
    handle = client.get_workflow_handle(execution_id)
    await describe_handle(handle)
    try:
        transitions = await handle.query(names.QUERY_HISTORY, rpc_timeout=_QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError) as exc:
        raise Unavailable("QUERY_FAILED", f"could not read the history: {exc}") from exc
    return list(transitions)


async def cancel_execution(
    client: Client, execution_id: str, *, terminate: bool = False, reason: str = "", actor: str | None = None
) -> str:
    """Request cancellation (cleanup steps run) or terminate (nothing more runs) a running execution; the
    execution records a cancellation's ``actor`` and ``reason`` in its history."""
    handle = client.get_workflow_handle(execution_id)
    description = await describe_handle(handle)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise Conflict(
            "EXECUTION_CLOSED",
            f"execution {execution_id} is already {state_of(description)}",
            {"state": state_of(description)},
        )
    if terminate:
        await handle.terminate(reason=reason or "terminated through the API")
        return "terminated"
    await request_cancel(client, execution_id, actor=actor, reason=reason)
    return "cancel_requested"


async def request_cancel(client: Client, execution_id: str, *, actor: str | None, reason: str = "") -> None:
    """Ask Temporal to cancel the execution on behalf of ``actor`` (see ``CancelRequest``)."""
    handle = client.get_workflow_handle(execution_id)
    await handle.cancel(reason=CancelRequest(actor=actor, reason=reason).encode())


@dataclass
class Page:
    """One page of the execution list."""

    executions: list[dict[str, Any]]
    next_page_token: str | None


async def list_executions(
    client: Client,
    *,
    definition: str | None = None,
    state: str | None = None,
    stage: str | None = None,
    stuck: bool = False,
    limit: int = 50,
    page_token: str | None = None,
) -> Page:
    """Executions newest first, filtered through Temporal visibility (``stuck``: only those whose workflow
    task keeps failing)."""
    query = visibility_query(definition=definition, state=state, stage=stage, stuck=stuck)
    found, next_token = await visibility_page(client, query, limit=limit, page_token=page_token)
    rows = []
    for execution in found:
        attributes = execution.typed_search_attributes
        rows.append(
            {
                "execution_id": execution.id,
                "run_id": execution.run_id,
                "definition": attributes.get(names.SA_DEFINITION),
                "version": attributes.get(names.SA_VERSION),
                "state": attributes.get(names.SA_STATE),
                "stage": attributes.get(names.SA_STAGE),
                "trigger": attributes.get(names.SA_TRIGGER),
                "temporal_status": execution.status.name if execution.status else None,
                "problem": _plain(reported_problem(attributes, execution.status)),
                "started_at": execution.start_time.isoformat(),
                "closed_at": execution.close_time.isoformat() if execution.close_time else None,
            }
        )
    return Page(rows, next_token)


async def visibility_page(
    client: Client, query: str, *, limit: int, page_token: str | None
) -> tuple[list[WorkflowExecution], str | None]:
    """One page of a visibility query and the token of the next (URL-safe base64), for the API's lists."""
    iterator = client.list_workflows(query, page_size=limit, next_page_token=_decode_page_token(page_token))
    try:
        await iterator.fetch_next_page(page_size=limit)
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise BadRequest("INVALID_FILTER", exc.message) from exc
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    following = iterator.next_page_token
    return list(iterator.current_page or []), base64.urlsafe_b64encode(
        following
    ).decode() if following else None


def _decode_page_token(page_token: str | None) -> bytes | None:
    """The Temporal page token an API list answer handed out (URL-safe base64); 400 for anything else."""
    if not page_token:
        return None
    try:
        return base64.b64decode(page_token.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "INVALID_PAGE_TOKEN", "page_token is not one this API issued", {"field": "page_token"}
        ) from None


def visibility_query(
    *,
    definition: str | None = None,
    state: str | None = None,
    stage: str | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    stuck: bool = False,
) -> str:
    """A visibility query for Conveyor executions matching every filter given (``stuck``: running ones
    whose workflow task keeps failing)."""
    clauses = [f"WorkflowType = '{names.DEFINITION_WORKFLOW}'"]
    for key, value in ((names.SA_DEFINITION, definition), (names.SA_STATE, state), (names.SA_STAGE, stage)):
        if value is not None:
            clauses.append(f"{key.name} = '{_quote(value)}'")
    if started_after is not None:
        clauses.append(f"StartTime >= '{_instant(started_after)}'")
    if started_before is not None:
        clauses.append(f"StartTime < '{_instant(started_before)}'")
    if stuck:
        clauses.append(STUCK_CLAUSE)
    return " AND ".join(clauses)


def _instant(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def describe_handle(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    """An execution's description; 404 for an unknown id, and for workflows that are not executions (the
    admission lanes, for one), so the API cannot be used to signal or cancel them."""
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(
                "EXECUTION_NOT_FOUND", f"no execution {handle.id}", {"execution_id": handle.id}
            ) from None
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    if description.workflow_type != names.DEFINITION_WORKFLOW:
        raise NotFound("EXECUTION_NOT_FOUND", f"no execution {handle.id}", {"execution_id": handle.id})
    return description


def state_of(description: WorkflowExecutionDescription) -> str:
    if description.status in _STATUS_STATE:
        return _STATUS_STATE[description.status].value
    state = description.typed_search_attributes.get(names.SA_STATE)
    return state or ExecutionState.QUEUED.value


async def _current_state(client: Client, workflow_id: str) -> str:
    try:
        return state_of(await client.get_workflow_handle(workflow_id).describe())
    except RPCError:
        return ExecutionState.QUEUED.value


def _plain(problem: Problem | None) -> dict[str, Any] | None:
    return asdict(problem) if problem else None


async def _closed_snapshot(handle: WorkflowHandle[Any, ExecutionSnapshot]) -> dict[str, Any]:
    """The snapshot a closed run left: its result, or the details of its failure."""
    try:
        return asdict(await handle.result())
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
            return dict(cause.details[0])
        state = (
            ExecutionState.CANCELLED
            if isinstance(cause, CancelledError | TerminatedError)
            else ExecutionState.FAILED
        )
        return {"state": state.value, "error": {"code": type(cause).__name__, "message": str(cause)}}


async def _snapshot(
    handle: WorkflowHandle[Any, ExecutionSnapshot], description: WorkflowExecutionDescription
) -> dict[str, Any]:
    status = description.status
    if status in {WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED}:
        return await _closed_snapshot(handle)
    try:
        snapshot = await handle.query(
            names.QUERY_DESCRIBE, result_type=ExecutionSnapshot, rpc_timeout=_QUERY_TIMEOUT
        )
    except (RPCError, WorkflowQueryFailedError):
        # No worker could answer (or the run was terminated before it started): visibility is all there is.
        return {"state": state_of(description)}
    return asdict(snapshot)
