"""``emit``: publish an event for event triggers (and the interpreter's own execution events)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.entities import EntityActivities
from core.event_triggers import publish
from core.listeners import LIFECYCLE_EVENTS
from core.settings import Settings
from workflows import errors
from workflows.entity_messages import EntityEvent
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import EmitConfig, parse_config


class EmitActivities:
    """Event publishing, with the store (to find triggers) and the client (to start executions)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        settings: Settings,
        *,
        automations: EntityActivities | None = None,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._settings = settings
        self._automations = automations

    @activity.defn(name="emit")
    async def emit(self, request: StepRequest) -> StepOutcome:
        """Start every definition whose event trigger matches; the output lists what started."""
        try:
            config = parse_config(EmitConfig, request.config)
        except ValueError as exc:
            raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
        info = activity.info()
        # Stable across retries of this activity, distinct for every emit (loops included).
        event_id = f"{info.workflow_id}:{info.workflow_run_id}:{info.activity_id}"
        async with self._sessions() as session:
            report = await publish(
                session,
                self._client,
                task_queue=self._settings.task_queue,
                event=config.event,
                data=config.data,
                event_id=event_id,
                source=request.execution_id,
            )
        if (
            self._automations is not None
            and config.event in LIFECYCLE_EVENTS
            and isinstance(config.data, dict)
        ):
            # An execution's own end also reaches the automation rules listening to it.
            report["automations"] = await self._automations.entity_event(
                EntityEvent(
                    event=config.event,
                    event_id=event_id,
                    entity_type="execution",
                    entity_id=request.execution_id.replace("/", ":"),  # an entity id has no "/"
                    entity=config.data,
                    at=datetime.now(UTC).isoformat(),
                )
            )
        return StepOutcome(
            output={"event": config.event, "event_id": event_id, **report},
            attempt=info.attempt,
            logs=[{"level": "info", "message": f"event {config.event}: started {len(report['started'])}"}],
        )
