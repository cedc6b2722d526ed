"""``emit``: publish an event for event triggers (and the interpreter's own execution events)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from core.event_triggers import publish
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import EmitConfig, parse_config


class EmitActivities:
    """Event publishing, with the store (to find triggers) and the client (to start executions)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], client: Client, settings: Settings
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._settings = settings

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
        return StepOutcome(
            output={"event": config.event, "event_id": event_id, **report},
            attempt=info.attempt,
            logs=[{"level": "info", "message": f"event {config.event}: started {len(report['started'])}"}],
        )
