"""Schedule triggers as Temporal Schedules: one schedule ``conveyor-<trigger id>`` per trigger.

The schedule's action starts ``DefinitionWorkflow`` with the definition's active version pinned in its input,
exactly as an API start would; publishing another version re-points every schedule of the definition.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.cron import check_five_fields
from core.definitions import runnable_version
from core.errors import ConveyorError, NotFound, Unavailable, Unprocessable
from core.inputs import prepare_input
from core.models import DefinitionVersion, Trigger
from workflows.definition import Definition
from workflows.durations import MAX_SECONDS, parse_duration
from workflows.messages import ExecutionInput
from workflows.states import ExecutionState

log = logging.getLogger("conveyor.schedules")

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]

OVERLAP_POLICIES: dict[str, ScheduleOverlapPolicy] = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


class ScheduleConfig(BaseModel):
    """A schedule trigger's ``config``: when it fires and what it starts with."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None,
        description="five fields: minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'",
    )
    interval: str | None = Field(default=None, description="a duration, e.g. '1h', '30s'")
    timezone: str = Field(default="UTC", description="IANA time zone the cron is read in")
    overlap: Overlap = Field(default="skip", description="what a firing does while the last run still runs")
    catchup_window: str | None = Field(
        default=None,
        description="how late a missed firing may still run (e.g. '10m'); Temporal's default: 1y",
    )
    jitter: str | None = Field(default=None, description="random delay added to each firing (e.g. '30s')")
    paused: bool = False
    input: dict[str, Any] = Field(default_factory=dict, description="the input of every run")

    @model_validator(mode="after")
    def _one_spec(self) -> ScheduleConfig:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        return self

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            check_five_fields(value)
        return value

    @field_validator("interval", "catchup_window", "jitter")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= parse_duration(value) <= MAX_SECONDS:
            raise ValueError("must be at least 1s and at most ten years")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from None
        return value


def schedule_id(trigger_id: str) -> str:
    """The Temporal schedule id of a trigger, as ``temporal schedule list`` shows it."""
    return f"conveyor-{trigger_id}"


def _seconds(value: str | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=parse_duration(value))


def build_action(
    *, trigger_id: str, version: DefinitionVersion, input: dict[str, Any], task_queue: str
) -> ScheduleActionStartWorkflow:
    """Start ``version`` of its definition the way ``start_execution`` does, with trigger ``schedule``."""
    definition = Definition.model_validate(version.document)
    prepared = prepare_input(definition.input, input)
    return ScheduleActionStartWorkflow(
        names.DEFINITION_WORKFLOW,
        ExecutionInput(
            definition=version.document,
            name=version.name,
            version=version.version,
            input=prepared,
            trigger="schedule",
            actor=f"schedule:{trigger_id}",
        ),
        # Temporal appends the firing time, so every run has its own id: <definition>/schedule-<id>-<time>.
        id=f"{version.name}/schedule-{trigger_id}",
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=definition.limits.timeout) if definition.limits.timeout else None,
        typed_search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(names.SA_DEFINITION, version.name),
                SearchAttributePair(names.SA_VERSION, version.version),
                SearchAttributePair(names.SA_STATE, ExecutionState.QUEUED.value),
                SearchAttributePair(names.SA_TRIGGER, "schedule"),
            ]
        ),
    )


def build_schedule(
    *, trigger_id: str, version: DefinitionVersion, config: ScheduleConfig, paused: bool, task_queue: str
) -> Schedule:
    """The whole Temporal schedule of a trigger."""
    spec = ScheduleSpec(
        cron_expressions=[config.cron] if config.cron else [],
        intervals=[ScheduleIntervalSpec(every=timedelta(seconds=parse_duration(config.interval)))]
        if config.interval
        else [],
        time_zone_name=config.timezone,
        jitter=_seconds(config.jitter),
    )
    return Schedule(
        action=build_action(
            trigger_id=trigger_id, version=version, input=config.input, task_queue=task_queue
        ),
        spec=spec,
        policy=SchedulePolicy(
            overlap=OVERLAP_POLICIES[config.overlap], catchup_window=_seconds(config.catchup_window)
        ),
        state=ScheduleState(paused=paused, note=f"Conveyor trigger {trigger_id} of {version.name}"),
    )


async def create_schedule(
    client: Client,
    *,
    trigger_id: str,
    version: DefinitionVersion,
    config: ScheduleConfig,
    paused: bool,
    task_queue: str,
) -> ScheduleHandle:
    """Create the Temporal schedule of a trigger; a cron Temporal refuses is a 422."""
    schedule = build_schedule(
        trigger_id=trigger_id, version=version, config=config, paused=paused, task_queue=task_queue
    )
    try:
        return await client.create_schedule(schedule_id(trigger_id), schedule)
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc


async def replace_schedule(
    client: Client,
    *,
    trigger_id: str,
    version: DefinitionVersion,
    config: ScheduleConfig,
    paused: bool,
    task_queue: str,
) -> None:
    """Replace spec, policy, state and action of an existing schedule (after a PATCH of its config)."""
    schedule = build_schedule(
        trigger_id=trigger_id, version=version, config=config, paused=paused, task_queue=task_queue
    )

    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    try:
        await client.get_schedule_handle(schedule_id(trigger_id)).update(update)
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc


async def set_paused(client: Client, *, trigger_id: str, paused: bool, note: str) -> None:
    """Pause or unpause a schedule."""
    handle = client.get_schedule_handle(schedule_id(trigger_id))
    try:
        if paused:
            await handle.pause(note=note)
        else:
            await handle.unpause(note=note)
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc


async def trigger_now(client: Client, *, trigger_id: str, overlap: Overlap | None = None) -> None:
    """Fire the schedule's action once now (its overlap policy applies unless ``overlap`` is given)."""
    handle = client.get_schedule_handle(schedule_id(trigger_id))
    try:
        await handle.trigger(overlap=OVERLAP_POLICIES[overlap] if overlap else None)
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc


async def backfill(
    client: Client, *, trigger_id: str, start: datetime, end: datetime, overlap: Overlap | None = None
) -> None:
    """Take the actions the schedule would have taken between ``start`` and ``end``, now."""
    handle = client.get_schedule_handle(schedule_id(trigger_id))
    try:
        await handle.backfill(
            ScheduleBackfill(
                start_at=start, end_at=end, overlap=OVERLAP_POLICIES[overlap] if overlap else None
            )
        )
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc


async def delete_schedule(client: Client, *, trigger_id: str) -> None:
    """Delete the schedule; one that is gone already is fine."""
    try:
        await client.get_schedule_handle(schedule_id(trigger_id)).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise _mapped(exc, trigger_id) from exc


async def describe_schedule(client: Client, *, trigger_id: str) -> dict[str, Any]:
    """What Temporal knows of the schedule: paused, counts, recent and next runs."""
    try:
        description: ScheduleDescription = await client.get_schedule_handle(
            schedule_id(trigger_id)
        ).describe()
    except RPCError as exc:
        raise _mapped(exc, trigger_id) from exc
    info = description.info
    action = description.schedule.action
    version = None
    if isinstance(action, ScheduleActionStartWorkflow) and action.args:
        argument = action.args[0]
        if isinstance(argument, Payload):  # described actions carry their arguments undecoded
            argument = client.data_converter.payload_converter.from_payload(argument)
        if isinstance(argument, dict):
            version = argument.get("version")
    return {
        "schedule_id": description.id,
        "paused": description.schedule.state.paused,
        "version": version,
        "num_actions": info.num_actions,
        "num_actions_skipped_overlap": info.num_actions_skipped_overlap,
        "running": [
            a.workflow_id for a in info.running_actions if isinstance(a, ScheduleActionExecutionStartWorkflow)
        ],
        "recent_runs": [
            {
                "scheduled_at": a.scheduled_at.isoformat(),
                "started_at": a.started_at.isoformat(),
                "execution_id": a.action.workflow_id
                if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
                else None,
            }
            for a in info.recent_actions
        ],
        "next_runs": [t.isoformat() for t in info.next_action_times[:5]],
    }


async def repoint_schedules(
    session: AsyncSession, client: Client, *, name: str, task_queue: str
) -> list[str]:
    """Point every schedule trigger of ``name`` at its active version; returns the trigger ids updated.

    Called after a publish, which has already happened: a schedule that cannot be updated (Temporal down,
    its input no longer valid for the new version) keeps its old version and is logged, never raised.
    """
    query = select(Trigger).where(Trigger.definition == name, Trigger.type == "schedule")
    triggers = list((await session.exec(query)).all())
    if not triggers:
        return []
    version = await runnable_version(session, name=name)
    updated: list[str] = []
    for trigger in triggers:
        try:
            config = ScheduleConfig.model_validate(trigger.config)
            action = build_action(
                trigger_id=trigger.id, version=version, input=config.input, task_queue=task_queue
            )
        except (ConveyorError, ValueError) as exc:
            log.error("schedule trigger %s stays on its old version: %s", trigger.id, exc)
            continue

        def update(
            current: ScheduleUpdateInput, action: ScheduleActionStartWorkflow = action
        ) -> ScheduleUpdate:
            schedule = dataclasses.replace(current.description.schedule, action=action)
            return ScheduleUpdate(schedule=schedule)

        try:
            await client.get_schedule_handle(schedule_id(trigger.id)).update(update)
        except RPCError as exc:
            log.error("schedule trigger %s stays on its old version: %s", trigger.id, exc.message)
            continue
        updated.append(trigger.id)
    return updated


def _mapped(exc: RPCError, trigger_id: str) -> ConveyorError:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return NotFound(
            "SCHEDULE_NOT_FOUND", f"trigger {trigger_id} has no Temporal schedule", {"trigger_id": trigger_id}
        )
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return Unprocessable("SCHEDULE_INVALID", f"Temporal refused the schedule: {exc.message}")
    return Unavailable("TEMPORAL_UNAVAILABLE", f"could not reach Temporal: {exc.message}")
