"""Automation rules (built in and stored) and SLA configs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from api.auth import Admin, Viewer
from api.deps import SessionDep
from api.routers.entities import actor_of
from core import automations, sla
from core.api_keys import Principal
from core.entities import PermissionDenied
from core.lifecycles import list_lifecycles
from workflows.lifecycles import PERMISSION_DENIED, Permission

router = APIRouter(prefix="/api/v1", tags=["automations"])


@router.get("/automations")
async def list_automations(session: SessionDep, _caller: Viewer) -> dict[str, Any]:
    """The built-in rules, then the stored ones."""
    builtin = [{**asdict(rule), "builtin": True} for rule in automations.builtin_rules()]
    stored = [
        {**row.model_dump(mode="json"), "builtin": False}
        for row in await automations.list_automations(session)
    ]
    return {"items": builtin + stored}


@router.post("/automations", status_code=201)
async def create_automation(
    session: SessionDep,
    _caller: Admin,
    document: dict[str, Any] = Body(
        examples=[
            {
                "id": "alert_on_breach",
                "event": "sla.breached",
                "entity_type": "task",
                "predicate": "{{ event.entity.priority in ['high', 'critical'] }}",
                "actions": [
                    {"type": "emit_alert", "channel": "log", "message": "SLA of {{ event.entity_id }}"}
                ],
            }
        ]
    ),
) -> dict[str, Any]:
    """Store a rule (admin): ``{id, event, entity_type?, predicate?, actions: [{type, ...params}]}``."""
    row = await automations.create_automation(session, document=document)
    return row.model_dump(mode="json")


class SlaConfigBody(BaseModel):
    entity_type: str = Field(default="task", max_length=63)
    task_type: str | None = Field(default=None, max_length=63, description="none: every task type")
    service_area: str | None = Field(default=None, description="accepted for the notes' shape; unused")
    target_minutes: float = Field(gt=0)
    start_on: list[str] | None = Field(default=None, description="default: the lifecycle's rule")
    stop_on: list[str] | None = None
    pause_on: list[str] | None = Field(default=None, description="states in which the clock stops")
    active: bool = True


def _manage_sla(caller: Principal) -> None:
    if Permission.MANAGE_SLA not in actor_of(caller).permissions:
        raise PermissionDenied(
            PERMISSION_DENIED,
            f"{caller.name} lacks permission MANAGE_SLA",
            {"required_permission": "MANAGE_SLA", "role": caller.role.name},
        )


@router.post("/sla-configs", status_code=201)
async def create_sla_config(session: SessionDep, caller: Viewer, body: SlaConfigBody) -> dict[str, Any]:
    """Store an SLA target (MANAGE_SLA); entities created afterwards take the newest match."""
    _manage_sla(caller)
    row = await sla.create_sla_config(
        session,
        entity_type=body.entity_type,
        task_type=body.task_type,
        target_minutes=body.target_minutes,
        start_on=body.start_on,
        stop_on=body.stop_on,
        pause_on=body.pause_on,
        active=body.active,
    )
    return row.model_dump(mode="json")


@router.get("/sla-configs")
async def list_sla_configs(session: SessionDep, _caller: Viewer, active_only: bool = False) -> dict[str, Any]:
    """Stored SLA configs (newest first), then the lifecycles' defaults they override."""
    stored = [
        {**row.model_dump(mode="json"), "builtin": False}
        for row in await sla.list_sla_configs(session, active_only=active_only)
    ]
    return {"items": stored + sla.builtin_sla_configs(await list_lifecycles(session))}
