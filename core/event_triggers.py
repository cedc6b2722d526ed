"""Event triggers: an event (an ``emit`` step, an execution that completed or failed) starts every
definition whose event trigger matches it, once per event."""

from __future__ import annotations

import hashlib
import logging
from fnmatch import fnmatchcase
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from core.errors import ConveyorError
from core.executions import start_execution
from core.models import Trigger
from workflows import expressions

log = logging.getLogger("conveyor.events")


async def publish(
    session: AsyncSession,
    client: Client,
    *,
    task_queue: str,
    event: str,
    data: Any,
    event_id: str,
    source: str | None = None,
) -> dict[str, Any]:
    """Start what the event triggers; returns ``{started: [ids], skipped: [...], errors: [...]}``.

    A trigger's ``config``: ``event`` (a name, or a pattern like ``execution.*``), ``when`` (a predicate over
    ``event``), ``input_mapping`` (templates over ``event``; by default the event's data is the input).
    The execution id derives from the trigger and the event id, so a redelivered event starts nothing new.
    """
    query = select(Trigger).where(col(Trigger.type) == "event", col(Trigger.paused).is_(False))
    triggers = (await session.exec(query)).all()
    context = {"event": {"name": event, "id": event_id, "data": data, "source": source}}
    report: dict[str, Any] = {"started": [], "skipped": [], "errors": []}
    for trigger in triggers:
        pattern = str(trigger.config.get("event", ""))
        if not fnmatchcase(event, pattern):
            continue
        try:
            when = trigger.config.get("when")
            if when is not None and not expressions.truthy(expressions.render(when, context)):
                report["skipped"].append(trigger.id)
                continue
            mapping = trigger.config.get("input_mapping")
            values = expressions.render(mapping, context) if mapping is not None else data
            started = await start_execution(
                session,
                client,
                task_queue=task_queue,
                name=trigger.definition,
                input=values if isinstance(values, dict) else {"data": values},
                caller_id=f"event-{trigger.id}-{hashlib.sha256(event_id.encode()).hexdigest()[:32]}",
                trigger="event",
                actor=f"event:{event}",
            )
        except (expressions.ExpressionError, ConveyorError) as exc:
            log.warning("event trigger %s on %s: %s", trigger.id, event, exc)
            report["errors"].append({"trigger": trigger.id, "message": str(exc)})
            continue
        report["started"].append(started.execution_id)
    return report
