"""Entities: create, transition, read, list (a visibility query) and history (transitions and SLA records)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from api.auth import Viewer
from api.deps import SessionDep, SettingsDep, TemporalDep
from core import entities as store
from core.api_keys import Principal
from core.lifecycles import get_lifecycle
from workflows.entity_messages import TransitionRequest
from workflows.lifecycles import Actor

router = APIRouter(prefix="/api/v1/entities", tags=["entities"])


def actor_of(principal: Principal) -> Actor:
    """The caller as the lifecycle sees it: the key's name, its role and the role's permissions."""
    return Actor.of_role(principal.name, principal.role.name)


class TransitionBody(BaseModel):
    target_state: str = Field(min_length=1, max_length=63)
    context: dict[str, Any] = Field(default_factory=dict, description="recorded with the transition")
    notes: str = Field(default="", max_length=10_000)
    request_id: str | None = Field(
        default=None,
        max_length=128,
        description="a retry with the same id answers the first result instead of moving again",
    )


@router.post("/{entity_type}", status_code=201, responses={200: {"description": "the entity existed"}})
async def create(
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    caller: Viewer,
    entity_type: str,
    response: Response,
    body: dict[str, Any] = Body(
        examples=[{"title": "Process application", "task_type": "intake", "assigned_to": "alice"}]
    ),
) -> dict[str, Any]:
    """Create an entity in its lifecycle's initial state (``id`` optional: a repeat returns the same)."""
    fields = dict(body)
    entity_id = fields.pop("id", None)
    created = await store.create_entity(
        session,
        temporal,
        task_queue=settings.task_queue,
        entity_type=entity_type,
        data=fields,
        actor=actor_of(caller),
        entity_id=str(entity_id) if entity_id is not None else None,
    )
    if not created.created:
        response.status_code = 200
    return asdict(created.entity)


@router.get("/{entity_type}")
async def list_entities(
    session: SessionDep,
    temporal: TemporalDep,
    _caller: Viewer,
    entity_type: str,
    state: str | None = None,
    task_type: str | None = None,
    priority: str | None = None,
    assigned_to: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
    page_token: str | None = None,
) -> dict[str, Any]:
    """Entities of a type, newest first, filtered by state and indexed fields (a visibility query)."""
    page = await store.list_entities(
        temporal,
        lifecycle=await get_lifecycle(session, entity_type),
        limit=limit,
        page_token=page_token,
        state=state,
        task_type=task_type,
        priority=priority,
        assigned_to=assigned_to,
    )
    if entity_type == "task":
        await store.refresh_active_tasks(temporal)
    return {"items": page.items, "next_page_token": page.next_page_token}


@router.get("/{entity_type}/{entity_id}")
async def read(
    session: SessionDep, temporal: TemporalDep, _caller: Viewer, entity_type: str, entity_id: str
) -> dict[str, Any]:
    """The entity, the states it may move to now, and its SLA tracking."""
    lifecycle = await get_lifecycle(session, entity_type)
    view = await store.get_entity(temporal, entity_type=entity_type, entity_id=entity_id)
    return {
        **asdict(view.entity),
        "allowed_transitions": [t.to_state for t in lifecycle.allowed_from(view.entity.state)],
        "terminal": view.terminal,
        "sla": asdict(view.sla),
    }


@router.post(
    "/{entity_type}/{entity_id}/transitions",
    responses={
        400: {"description": "INVALID_TRANSITION: {current_state, target_state, entity_type}"},
        403: {"description": "PERMISSION_DENIED"},
    },
)
async def transition(
    session: SessionDep,
    temporal: TemporalDep,
    caller: Viewer,
    entity_type: str,
    entity_id: str,
    body: TransitionBody,
) -> dict[str, Any]:
    """Move the entity to ``target_state``; the entity's workflow validates before recording anything."""
    await get_lifecycle(session, entity_type)
    actor = actor_of(caller)
    result = await store.transition_entity(
        temporal,
        entity_type=entity_type,
        entity_id=entity_id,
        request=TransitionRequest(
            target_state=body.target_state,
            actor=actor.name,
            role=actor.role,
            permissions=list(actor.permissions),
            notes=body.notes,
            context=body.context,
            request_id=body.request_id,
        ),
    )
    return {
        **asdict(result.entity),
        "transition": asdict(result.transition),
        "repeated": result.repeated,
    }


@router.get("/{entity_type}/{entity_id}/history")
async def history(
    session: SessionDep, temporal: TemporalDep, _caller: Viewer, entity_type: str, entity_id: str
) -> dict[str, Any]:
    """The transitions (actor, notes, context, time) and the SLA records (target, actual, breached)."""
    await get_lifecycle(session, entity_type)
    return await store.entity_history(session, temporal, entity_type=entity_type, entity_id=entity_id)
