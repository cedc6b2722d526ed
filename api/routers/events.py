"""An execution's live events (Server-Sent Events) and its log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.auth import Viewer
from api.deps import SessionDep, TemporalDep
from core import events as service
from workflows.messages import ExecutionEvent

router = APIRouter(prefix="/api/v1", tags=["executions"])

_SSE_EXAMPLE = (
    "id: 1\nevent: started\n"
    'data: {"seq": 1, "type": "started", "at": "2025-01-01T00:00:00+00:00", "step": null, "data": {}}\n\n'
)


class LogEntryView(BaseModel):
    seq: int
    at: str
    level: str
    message: str
    step: str | None
    metadata: dict[str, Any]


# Declared before executions.router, whose bare ``/executions/{execution_id:path}`` would swallow these.


@router.get(
    "/executions/{execution_id:path}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "a text/event-stream: `id` is the event's seq, `event` its type, `data` the "
            "event; `stuck` and `recovered` (the execution's workflow task keeps failing, or went through "
            "again) have seq 0 and no `id`",
            "content": {"text/event-stream": {"example": _SSE_EXAMPLE}},
        },
        404: {"description": "no such execution"},
    },
)
async def execution_events(
    temporal: TemporalDep,
    session: SessionDep,
    _caller: Viewer,
    execution_id: str,
    after: int = Query(0, ge=0, description="send the events after this seq (a fresh client: 0)"),
    last_event_id: int | None = Header(
        None, ge=0, description="set by a reconnecting EventSource; wins over `after`"
    ),
) -> StreamingResponse:
    """Server-Sent Events of the execution as they happen; the stream ends when the execution does."""
    feed = await service.follow_events(
        temporal, execution_id, after=last_event_id if last_event_id is not None else after
    )
    # The key check's session would stay open (holding a pooled connection) for as long as the stream runs.
    await session.close()
    return StreamingResponse(
        _sse(feed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/executions/{execution_id:path}/logs", response_model=list[LogEntryView])
async def execution_logs(
    temporal: TemporalDep,
    _caller: Viewer,
    execution_id: str,
    level: str | None = Query(
        None, description="debug, info, warning or error: that level and the more severe ones"
    ),
    step: str | None = Query(None, description="only the entries of this step"),
) -> list[LogEntryView]:
    """The execution's log: step lifecycle, HTTP call summaries, retries, custom code output."""
    entries = await service.execution_logs(temporal, execution_id, level=level, step=step)
    return [LogEntryView(**asdict(entry)) for entry in entries]


async def _sse(feed: AsyncIterator[ExecutionEvent | service.KeepAlive]) -> AsyncIterator[str]:
    async for item in feed:
        if isinstance(item, service.KeepAlive):
            yield ": keep-alive\n\n"
        else:
            # ``stuck`` and ``recovered`` (seq 0) are not recorded events: no id, so Last-Event-ID stays put.
            sse_id = f"id: {item.seq}\n" if item.seq else ""
            yield f"{sse_id}event: {item.type}\ndata: {json.dumps(asdict(item), default=str)}\n\n"
