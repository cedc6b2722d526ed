"""Operator control of executions: retry, skip, suspend, resume, signals, and the same in bulk."""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.errors import BadRequest, Conflict, ConveyorError, NotFound, Unavailable, Unprocessable
from core.executions import describe_handle, request_cancel, state_of, visibility_query
from workflows import errors
from workflows.inputs import input_problems, merge_patch
from workflows.messages import (
    AdvanceRequest,
    ControlRequest,
    ControlResult,
    ExecutionInput,
    ExecutionSnapshot,
    RetryRequest,
    SkipRequest,
)
from workflows.steps import EVENT_NAME

_BULK_CONCURRENCY = 20


async def retry_execution(
    client: Client,
    execution_id: str,
    *,
    from_step: str | None = None,
    input_patch: dict[str, Any] | None = None,
    actor: str | None = None,
) -> ControlResult:
    """A SUSPENDED execution resumes at its failed step (or ``from_step``); a closed one runs again."""
    handle = client.get_workflow_handle(execution_id)
    description = await describe_handle(handle)
    if description.status == WorkflowExecutionStatus.RUNNING:
        return await _update(
            client, execution_id, names.UPDATE_RETRY, RetryRequest(from_step, input_patch, actor)
        )
    if description.status == WorkflowExecutionStatus.COMPLETED:
        raise Conflict("EXECUTION_COMPLETED", f"execution {execution_id} completed; start a new one instead")
    if from_step is not None:
        raise Conflict(
            "INVALID_STATE", "from_step needs a SUSPENDED execution; a closed one runs again from the start"
        )
    return await _rerun(client, execution_id, input_patch, actor)


async def skip_step(
    client: Client, execution_id: str, *, output: Any, actor: str | None = None
) -> ControlResult:
    """A SUSPENDED execution goes on past its failed step, which takes ``output``."""
    return await _update(client, execution_id, names.UPDATE_SKIP, SkipRequest(output=output, actor=actor))


async def suspend_execution(
    client: Client, execution_id: str, *, reason: str = "", actor: str | None = None
) -> ControlResult:
    """Park a running execution at its next step boundary."""
    return await _update(
        client, execution_id, names.UPDATE_SUSPEND, ControlRequest(actor=actor, reason=reason)
    )


async def resume_execution(client: Client, execution_id: str, *, actor: str | None = None) -> ControlResult:
    """Continue an execution parked by ``suspend``."""
    return await _update(client, execution_id, names.UPDATE_RESUME, ControlRequest(actor=actor))


async def advance(
    client: Client, execution_id: str, *, stage: str, output: Any, actor: str | None
) -> ControlResult:
    """Move a pipeline item past ``stage`` (queued, running or parked there), with ``output``. Naming the
    stage makes a repeated request (a double click, a client retry) fail instead of skipping the next one."""
    request = AdvanceRequest(stage=stage, output=output, actor=actor)
    return await _update(client, execution_id, names.UPDATE_ADVANCE, request)


_OWN_SIGNALS = frozenset({names.SIGNAL_LANE_VERDICT})
_OWN_UPDATES = frozenset(
    {
        names.UPDATE_RETRY,
        names.UPDATE_SKIP,
        names.UPDATE_SUSPEND,
        names.UPDATE_RESUME,
        names.UPDATE_ADVANCE,
        names.UPDATE_SETTLED,
    }
)


def _check_event_name(name: str, kind: str, own: frozenset[str]) -> None:
    """The signals and updates sent by name are those ``wait`` steps wait for, never Conveyor's own: a
    forged ``lane_verdict`` would let an execution past its admission limit, and the control updates have
    their own routes, which record who used them."""
    if not re.fullmatch(EVENT_NAME, name) or name in own:
        raise Unprocessable(
            "INVALID_NAME", f"{name!r} is not a {kind} name a wait step can wait for", {"field": "name"}
        )


async def signal_execution(client: Client, execution_id: str, name: str, payload: Any) -> None:
    """Send the named signal, as ``temporal workflow signal --name`` does."""
    _check_event_name(name, "signal", _OWN_SIGNALS)
    handle = client.get_workflow_handle(execution_id)
    description = await describe_handle(handle)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise Conflict("EXECUTION_CLOSED", f"execution {execution_id} is {state_of(description)}")
    try:
        await handle.signal(name, payload)
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc


async def decide(client: Client, execution_id: str, name: str, payload: Any) -> ControlResult:
    """Resolve the ``wait`` step waiting for ``name``; a payload breaking its schema is refused (422)."""
    _check_event_name(name, "update", _OWN_UPDATES)
    answer = await _execute_update(client, execution_id, name, payload, dict)
    return ControlResult(state="PROCESSING", message=f"{name} accepted: {answer}")


async def _update(client: Client, execution_id: str, update: str, request: object) -> ControlResult:
    result: ControlResult = await _execute_update(client, execution_id, update, request, ControlResult)
    return result


async def _execute_update(
    client: Client, execution_id: str, update: str, request: object, result_type: type
) -> Any:
    handle = client.get_workflow_handle(execution_id)
    description = await describe_handle(handle)
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = state_of(description)
        raise Conflict(
            "INVALID_STATE", f"{update} needs a running execution; this one is {state}", {"state": state}
        )
    try:
        result = await handle.execute_update(update, request, result_type=result_type)
    except WorkflowUpdateFailedError as exc:
        # The workflow's validator rejected it: nothing was written to the execution's history.
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
            if cause.type == errors.INPUT_INVALID:
                raise Unprocessable("INPUT_INVALID", cause.message, details) from None
            raise Conflict("INVALID_STATE", cause.message, details) from None
        raise Conflict("INVALID_STATE", str(cause or exc)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound("EXECUTION_NOT_FOUND", f"no execution {execution_id}") from None
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    return result


async def _rerun(
    client: Client, execution_id: str, input_patch: dict[str, Any] | None, actor: str | None
) -> ControlResult:
    """Start a closed (failed or cancelled) execution again, as a new run under the same id."""
    handle = client.get_workflow_handle(execution_id)
    first = None
    async for event in handle.fetch_history_events():
        first = event
        break
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        raise NotFound("EXECUTION_NOT_FOUND", f"no history for {execution_id}")
    started = first.workflow_execution_started_event_attributes
    [original] = await client.data_converter.decode(started.input.payloads, [ExecutionInput])
    assert isinstance(original, ExecutionInput)
    if input_patch is not None:
        original.input = merge_patch(original.input, input_patch)
        problems = input_problems(original.definition.get("input"), original.input)
        if problems:
            raise Unprocessable(
                "INPUT_INVALID", "the patched input does not match the input schema", {"problems": problems}
            )
    original.actor = actor
    description = await describe_handle(handle)
    try:
        new = await client.start_workflow(
            names.DEFINITION_WORKFLOW,
            original,
            id=execution_id,
            task_queue=started.task_queue.name,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=TypedSearchAttributes(
                [
                    pair
                    for pair in description.typed_search_attributes
                    if pair.key.name not in (names.SA_STATE.name, names.SA_ERROR.name)
                ]
                + [SearchAttributePair(names.SA_STATE, "QUEUED")]
            ),
            result_type=ExecutionSnapshot,
        )
    except WorkflowAlreadyStartedError:
        raise Conflict("INVALID_STATE", f"execution {execution_id} is running again already") from None
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    return ControlResult(state="QUEUED", message=f"new run {new.result_run_id}")


@dataclass
class BulkFilter:
    """Which executions a bulk action applies to."""

    definition: str | None = None
    state: str | None = None
    stage: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None


@dataclass
class BulkReport:
    """What a bulk action did (or, on a dry run, would touch)."""

    action: str
    matched: int
    dry_run: bool
    succeeded: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    execution_ids: list[str] = field(default_factory=list)


BULK_ACTIONS = ("retry", "cancel", "resume")


async def bulk(
    client: Client, action: str, where: BulkFilter, *, dry_run: bool, actor: str | None
) -> BulkReport:
    """Apply ``action`` to every execution matching ``where``; failures are reported, not fatal."""
    if action not in BULK_ACTIONS:
        raise BadRequest("INVALID_ACTION", f"bulk actions are {', '.join(BULK_ACTIONS)}", {"action": action})
    query = visibility_query(**asdict(where))
    if action in ("cancel", "resume"):
        query += " AND ExecutionStatus = 'Running'"
    try:
        ids = [execution.id async for execution in client.list_workflows(query, page_size=1000)]
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise BadRequest("INVALID_FILTER", exc.message) from exc
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    report = BulkReport(action=action, matched=len(ids), dry_run=dry_run, execution_ids=ids[:1000])
    if dry_run:
        return report
    gate = asyncio.Semaphore(_BULK_CONCURRENCY)

    async def apply(execution_id: str) -> None:
        async with gate:
            try:
                if action == "retry":
                    await retry_execution(client, execution_id, actor=actor)
                elif action == "resume":
                    await resume_execution(client, execution_id, actor=actor)
                else:
                    await request_cancel(client, execution_id, actor=actor)
                report.succeeded += 1
            except ConveyorError as exc:
                report.failed.append(
                    {"execution_id": execution_id, "error_code": exc.error_code, "message": exc.message}
                )
            except (RPCError, WorkflowAlreadyStartedError) as exc:
                report.failed.append(
                    {"execution_id": execution_id, "error_code": "TEMPORAL_ERROR", "message": str(exc)}
                )

    await asyncio.gather(*(apply(execution_id) for execution_id in ids))
    return report
