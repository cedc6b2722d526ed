"""Triggers: create webhook and schedule triggers, read, change, rotate secrets, pause, run, backfill."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from api.auth import Admin, Operator, Viewer
from api.deps import SealerDep, SessionDep, SettingsDep, TemporalDep
from core import schedules
from core import triggers as store
from core.errors import BadRequest, Conflict
from core.models import Trigger

router = APIRouter(prefix="/api/v1", tags=["triggers"])


class TriggerCreate(BaseModel):
    type: Literal["webhook", "schedule", "event"]
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="webhook: {scheme, secret?, tolerance_s, id_header, input_mapping, ...}; "
        "schedule: {cron | interval, timezone, overlap, catchup_window, paused, input}",
    )


class TriggerCreated(BaseModel):
    id: str
    definition: str
    type: str
    url: str | None = Field(default=None, description="webhooks: where the sender posts")
    secret: str | None = Field(
        default=None, description="the generated secret, shown this once (absent when you gave one)"
    )
    schedule_id: str | None = Field(default=None, description="schedules: the Temporal schedule id")


class TriggerView(BaseModel):
    id: str
    definition: str
    type: str
    config: dict[str, Any]
    paused: bool
    url: str | None
    secrets: list[dict[str, Any]] = Field(description="masked: a hint, created_at, expires_at, active")
    created_at: datetime
    updated_at: datetime
    schedule: dict[str, Any] | None = Field(default=None, description="schedules: what Temporal reports")


class TriggerPatch(BaseModel):
    config: dict[str, Any] | None = Field(default=None, description="keys to change; null removes a key")
    secret: str | None = Field(
        default=None, description="a new secret; the old one stays valid for the overlap"
    )
    retire_old_secret: bool = Field(default=False, description="stop accepting the previous secret now")


class RunBody(BaseModel):
    overlap: schedules.Overlap | None = Field(default=None, description="instead of the schedule's policy")


class BackfillBody(BaseModel):
    start: datetime
    end: datetime
    overlap: schedules.Overlap | None = None


class Done(BaseModel):
    id: str
    result: str


def _url(trigger: Trigger) -> str | None:
    return f"/hooks/{trigger.id}" if trigger.type == "webhook" else None


def _view(trigger: Trigger, schedule: dict[str, Any] | None = None) -> TriggerView:
    return TriggerView(
        id=trigger.id,
        definition=trigger.definition,
        type=trigger.type,
        config=trigger.config,
        paused=trigger.paused,
        url=_url(trigger),
        secrets=store.masked_secrets(trigger),
        created_at=trigger.created_at,
        updated_at=trigger.updated_at,
        schedule=schedule,
    )


@router.post("/definitions/{name}/triggers", status_code=201, response_model=TriggerCreated)
async def create_trigger(
    name: str,
    body: TriggerCreate,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    sealer: SealerDep,
    _caller: Admin,
) -> TriggerCreated:
    """Create a webhook (answers its URL and, if generated, its secret once) or a schedule trigger."""
    created = await store.create_trigger(
        session, temporal, settings, sealer=sealer, definition=name, type=body.type, config=body.config
    )
    trigger = created.trigger
    return TriggerCreated(
        id=trigger.id,
        definition=trigger.definition,
        type=trigger.type,
        url=_url(trigger),
        secret=created.secret,
        schedule_id=schedules.schedule_id(trigger.id) if trigger.type == "schedule" else None,
    )


@router.get("/triggers", response_model=list[TriggerView])
async def list_triggers(
    session: SessionDep, _caller: Viewer, definition: str | None = None
) -> list[TriggerView]:
    """Triggers of one definition, or all; secrets masked."""
    return [_view(t) for t in await store.list_triggers(session, definition=definition)]


@router.get("/triggers/{trigger_id}", response_model=TriggerView)
async def get_trigger(
    trigger_id: str, session: SessionDep, temporal: TemporalDep, _caller: Viewer
) -> TriggerView:
    """One trigger; for a schedule also its next and recent runs from Temporal."""
    trigger = await store.get_trigger(session, trigger_id=trigger_id)
    schedule = None
    if trigger.type == "schedule":
        schedule = await schedules.describe_schedule(temporal, trigger_id=trigger.id)
    return _view(trigger, schedule)


@router.patch("/triggers/{trigger_id}", response_model=TriggerView)
async def update_trigger(
    trigger_id: str,
    body: TriggerPatch,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    sealer: SealerDep,
    _caller: Admin,
) -> TriggerView:
    """Change the config, or rotate the secret: the old one stays valid until retired or the overlap ends."""
    trigger = await store.update_trigger(
        session,
        temporal,
        settings,
        sealer=sealer,
        trigger_id=trigger_id,
        config=body.config,
        secret=body.secret,
        retire_old_secret=body.retire_old_secret,
    )
    return _view(trigger)


@router.delete("/triggers/{trigger_id}", response_model=Done)
async def delete_trigger(trigger_id: str, session: SessionDep, temporal: TemporalDep, _caller: Admin) -> Done:
    """Delete the trigger (and its Temporal schedule); running executions are not touched."""
    await store.delete_trigger(session, temporal, trigger_id=trigger_id)
    return Done(id=trigger_id, result="deleted")


@router.post("/triggers/{trigger_id}/pause", response_model=TriggerView)
async def pause_trigger(
    trigger_id: str, session: SessionDep, temporal: TemporalDep, _caller: Operator
) -> TriggerView:
    """Pause: a webhook answers 404 to deliveries, a schedule stops firing."""
    return _view(await store.set_paused(session, temporal, trigger_id=trigger_id, paused=True))


@router.post("/triggers/{trigger_id}/resume", response_model=TriggerView)
async def resume_trigger(
    trigger_id: str, session: SessionDep, temporal: TemporalDep, _caller: Operator
) -> TriggerView:
    """Resume a paused trigger."""
    return _view(await store.set_paused(session, temporal, trigger_id=trigger_id, paused=False))


async def _schedule_trigger(session: SessionDep, trigger_id: str) -> Trigger:
    trigger = await store.get_trigger(session, trigger_id=trigger_id)
    if trigger.type != "schedule":
        raise Conflict(
            "NOT_A_SCHEDULE", f"trigger {trigger_id} is a {trigger.type} trigger; this is for schedules"
        )
    return trigger


@router.post("/triggers/{trigger_id}/run", response_model=Done, status_code=202)
async def run_trigger(
    trigger_id: str,
    session: SessionDep,
    temporal: TemporalDep,
    _caller: Operator,
    body: RunBody = Body(default_factory=RunBody),
) -> Done:
    """Fire a schedule once now (its overlap policy applies unless the body names another)."""
    trigger = await _schedule_trigger(session, trigger_id)
    await schedules.trigger_now(temporal, trigger_id=trigger.id, overlap=body.overlap)
    return Done(id=trigger.id, result="triggered")


@router.post("/triggers/{trigger_id}/backfill", response_model=Done, status_code=202)
async def backfill_trigger(
    trigger_id: str, body: BackfillBody, session: SessionDep, temporal: TemporalDep, _caller: Operator
) -> Done:
    """Take now the runs the schedule would have started between ``start`` and ``end``."""
    if body.end <= body.start:
        raise BadRequest("INVALID_RANGE", "end must be after start", {"field": "end"})
    trigger = await _schedule_trigger(session, trigger_id)
    start, end = (
        moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in (body.start, body.end)
    )
    await schedules.backfill(temporal, trigger_id=trigger.id, start=start, end=end, overlap=body.overlap)
    return Done(id=trigger.id, result="backfill requested")
