"""Entities through Temporal: create (start the entity's workflow), transition (an update), read, list."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.entity_metrics import ACTIVE_TASKS, TRANSITIONS
from core.errors import BadRequest, ConveyorError, NotFound, Unavailable, Unprocessable
from core.executions import visibility_page
from core.lifecycles import get_lifecycle
from core.sla import resolve_sla, sla_records
from workflows.entity_messages import (
    EntityRecord,
    EntityStart,
    EntityView,
    TransitionRequest,
    TransitionResult,
)
from workflows.lifecycles import (
    INVALID_TRANSITION,
    PERMISSION_DENIED,
    Actor,
    Lifecycle,
    LifecycleInvalid,
    lifecycle_document,
    validate_fields,
)

ENTITY_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
INDEXED = {"task_type": names.SA_TASK_TYPE, "priority": names.SA_PRIORITY, "assigned_to": names.SA_ASSIGNEE}
"""Entity fields kept as search attributes, so lists can filter on them."""


class InvalidTransition(ConveyorError):
    """400 ``INVALID_TRANSITION``: details ``{current_state, target_state, entity_type}``."""

    status = 400


class PermissionDenied(ConveyorError):
    """403 ``PERMISSION_DENIED``."""

    status = 403


def workflow_id(entity_type: str, entity_id: str) -> str:
    """The workflow id of an entity."""
    return f"entity/{entity_type}/{entity_id}"


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Created:
    """A created (or, for a repeated id, the existing) entity."""

    entity: EntityRecord
    created: bool


async def create_entity(
    session: AsyncSession,
    client: Client,
    *,
    task_queue: str,
    entity_type: str,
    data: dict[str, Any],
    actor: Actor,
    entity_id: str | None = None,
    continue_after: int = 500,
) -> Created:
    """Start the workflow of a new entity in its lifecycle's initial state, with its SLA resolved now.

    With ``entity_id`` the call is idempotent: an entity that already exists under that id is returned as
    it is (``created`` false), which is what makes automation actions safe to retry.
    """
    lifecycle = await get_lifecycle(session, entity_type)
    if lifecycle.create_permission is not None and lifecycle.create_permission not in actor.permissions:
        raise PermissionDenied(
            PERMISSION_DENIED,
            f"{actor.name} lacks permission {lifecycle.create_permission}",
            {"required_permission": lifecycle.create_permission, "role": actor.role},
        )
    if entity_id is not None and not ENTITY_ID.match(entity_id):
        raise BadRequest("INVALID_ID", "id may hold 1-128 letters, digits and . _ : @ -", {"field": "id"})
    try:
        fields = validate_fields(lifecycle, data)
    except LifecycleInvalid as exc:
        raise Unprocessable(
            "VALIDATION_ERROR", "the entity is not valid", {"problems": exc.problems}
        ) from None
    sla = await resolve_sla(session, lifecycle, _text(fields.get("task_type")))
    now = _iso_now()
    record = EntityRecord(
        id=entity_id or uuid.uuid4().hex,
        type=lifecycle.type,
        state=lifecycle.initial,
        data=fields,
        created_by=actor.name,
        created_at=now,
        updated_at=now,
    )
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(names.SA_ENTITY_TYPE, record.type),
        SearchAttributePair(names.SA_STATE, record.state),
    ]
    pairs += [SearchAttributePair(key, str(fields[f])) for f, key in INDEXED.items() if fields.get(f)]
    wid = workflow_id(record.type, record.id)
    try:
        await client.start_workflow(
            names.ENTITY_WORKFLOW,
            EntityStart(
                entity=record,
                lifecycle=lifecycle_document(lifecycle),
                sla=sla,
                continue_after=continue_after,
            ),
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(pairs),
        )
    except WorkflowAlreadyStartedError:
        # Closed (final) and still within retention: it exists.
        return Created((await get_entity(client, entity_type=record.type, entity_id=record.id)).entity, False)
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", f"could not start the entity: {exc.message}") from exc
    if entity_id is None:
        return Created(record, True)
    existing = (await get_entity(client, entity_type=record.type, entity_id=record.id)).entity
    created = existing.created_at == record.created_at and existing.created_by == record.created_by
    return Created(existing, created)


async def transition_entity(
    client: Client,
    *,
    entity_type: str,
    entity_id: str,
    request: TransitionRequest,
) -> TransitionResult:
    """Ask the entity's workflow to move; raises ``InvalidTransition`` (400) or ``PermissionDenied`` (403)
    when its validator refuses, before anything is recorded."""
    handle = client.get_workflow_handle(workflow_id(entity_type, entity_id))
    try:
        # No update id from the request id: Temporal would answer a repeat with the first answer, which
        # says ``repeated: false``. The workflow keeps every request id it recorded and says so itself.
        result: TransitionResult = await handle.execute_update(
            names.UPDATE_TRANSITION, request, result_type=TransitionResult
        )
    except WorkflowUpdateFailedError as exc:
        TRANSITIONS.labels(entity_type, _result(exc.cause)).inc()
        raise _rejection(exc.cause) from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
        # No entity, or a final one whose workflow has ended: answer as the validator would have.
        result = await _closed_transition(client, entity_type, entity_id, request)
    TRANSITIONS.labels(entity_type, "accepted").inc()
    _refresh_soon(client)
    return result


async def _closed_transition(
    client: Client, entity_type: str, entity_id: str, request: TransitionRequest
) -> TransitionResult:
    view = await get_entity(client, entity_type=entity_type, entity_id=entity_id)
    repeat = next(
        (t for t in view.transitions if request.request_id and t.request_id == request.request_id), None
    )
    if repeat is not None:
        return TransitionResult(view.entity, repeat, repeated=True)
    # The workflow ends only in a terminal state, which nothing leaves.
    details = {
        "current_state": view.entity.state,
        "target_state": request.target_state,
        "entity_type": entity_type,
        "allowed": [],
    }
    TRANSITIONS.labels(entity_type, "invalid_transition").inc()
    raise InvalidTransition(
        INVALID_TRANSITION, f"{entity_type} {entity_id} is final ({view.entity.state})", details
    )


def _result(cause: BaseException | None) -> str:
    kind = cause.type if isinstance(cause, ApplicationError) else None
    return kind.lower() if kind in (INVALID_TRANSITION, PERMISSION_DENIED) else "error"


def _rejection(cause: BaseException | None) -> ConveyorError:
    if isinstance(cause, ApplicationError) and cause.type in (INVALID_TRANSITION, PERMISSION_DENIED):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        kind = PermissionDenied if cause.type == PERMISSION_DENIED else InvalidTransition
        return kind(cause.type, cause.message, details)
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return Unavailable("TRANSITION_FAILED", f"the transition failed: {message}")


async def get_entity(client: Client, *, entity_type: str, entity_id: str) -> EntityView:
    """The entity as its workflow describes it (running or ended); 404 when there is none."""
    handle = client.get_workflow_handle(workflow_id(entity_type, entity_id))
    try:
        view: EntityView = await handle.query(names.QUERY_ENTITY, result_type=EntityView)
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise NotFound(
                "ENTITY_NOT_FOUND",
                f"no {entity_type} {entity_id!r}",
                {"entity_type": entity_type, "id": entity_id},
            ) from None
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    return view


async def entity_history(
    session: AsyncSession, client: Client, *, entity_type: str, entity_id: str
) -> dict[str, Any]:
    """The entity's transitions (the audit trail) and its SLA records."""
    view = await get_entity(client, entity_type=entity_type, entity_id=entity_id)
    records = await sla_records(session, entity_type=entity_type, entity_id=entity_id)
    return {
        "entity": asdict(view.entity),
        "transitions": [asdict(t) for t in view.transitions],
        "sla": asdict(view.sla),
        "sla_records": [record.model_dump(mode="json") for record in records],
    }


@dataclass
class EntityPage:
    """One page of a list."""

    items: list[dict[str, Any]]
    next_page_token: str | None


def entity_query(entity_type: str, **filters: str | None) -> str:
    """The visibility query of a filtered entity list."""
    clauses = [
        f"WorkflowType = '{names.ENTITY_WORKFLOW}'",
        f"{names.SA_ENTITY_TYPE.name} = '{_quote(entity_type)}'",
    ]
    keys = {"state": names.SA_STATE, **INDEXED}
    for name, value in filters.items():
        if value is not None:
            clauses.append(f"{keys[name].name} = '{_quote(value)}'")
    return " AND ".join(clauses)


def check_filters(lifecycle: Lifecycle, **filters: str | None) -> None:
    """422 naming the first filter no entity of ``lifecycle`` can match: a state it lacks, or a value
    outside a field's choices (an empty list would read as "none match")."""
    allowed = {"state": lifecycle.states}
    for name in INDEXED:
        spec = lifecycle.fields.get(name)
        if spec is not None and spec.choices is not None:
            allowed[name] = tuple(str(choice) for choice in spec.choices)
    for name, value in filters.items():
        if value is not None and name in allowed and value not in allowed[name]:
            raise Unprocessable(
                "INVALID_FILTER",
                f"{name} is one of {', '.join(allowed[name])} for {lifecycle.type}; got {value!r}",
                {"field": name, "allowed": list(allowed[name])},
            )


async def list_entities(
    client: Client,
    *,
    lifecycle: Lifecycle,
    limit: int = 50,
    page_token: str | None = None,
    **filters: str | None,
) -> EntityPage:
    """Entities newest first, filtered through Temporal visibility (state and the indexed fields)."""
    check_filters(lifecycle, **filters)
    entity_type = lifecycle.type
    found, next_token = await visibility_page(
        client, entity_query(entity_type, **filters), limit=limit, page_token=page_token
    )
    prefix = f"entity/{entity_type}/"
    items = []
    for execution in found:
        attributes = execution.typed_search_attributes
        items.append(
            {
                "id": execution.id.removeprefix(prefix),
                "type": entity_type,
                "state": attributes.get(names.SA_STATE),
                **{name: attributes.get(key) for name, key in INDEXED.items()},
                "open": execution.close_time is None,
                "created_at": execution.start_time.isoformat(),
            }
        )
    return EntityPage(items, next_token)


_REFRESH_EVERY_S = 5.0
_last_refresh = 0.0
_refreshing: set[asyncio.Task[None]] = set()


async def refresh_active_tasks(client: Client) -> None:
    """Set ``active_tasks_total{state}`` from visibility: open task entities per non-final state."""
    global _last_refresh
    _last_refresh = time.monotonic()
    from workflows.lifecycles import TASK

    for state in TASK.states:
        if state in TASK.terminal:
            continue
        query = f"{entity_query('task', state=state)} AND ExecutionStatus = 'Running'"
        try:
            count = (await client.count_workflows(query)).count
        except RPCError:
            return
        ACTIVE_TASKS.labels(state).set(count)


def _refresh_soon(client: Client) -> None:
    """Refresh the gauge in the background, at most every few seconds (a scrape need not be exact)."""
    if time.monotonic() - _last_refresh < _REFRESH_EVERY_S:
        return
    task = asyncio.create_task(refresh_active_tasks(client))
    _refreshing.add(task)
    task.add_done_callback(_refreshing.discard)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


__all__ = [
    "Created",
    "EntityPage",
    "InvalidTransition",
    "PermissionDenied",
    "create_entity",
    "entity_history",
    "get_entity",
    "list_entities",
    "refresh_active_tasks",
    "transition_entity",
    "workflow_id",
]
