"""An execution's live events and its log, read through the interpreter's ``events`` and ``logs`` queries.

The event feed is woken by Temporal's history long-poll (``wait_new_event``): every time the run's history
grows, the ``events`` query is asked for what came after the last event sent. Nothing sleeps in a loop; when
history stays quiet for a while the feed yields a keep-alive instead, so proxies keep the connection open.

An execution whose workflow task keeps failing cannot answer the query; the feed then says why, once, with a
``stuck`` event (Temporal's category, cause and message: :mod:`core.problems`), and ``recovered`` when a
task goes through again. Those two are about the execution, not events it recorded: they carry ``seq`` 0
(no SSE id), so a reconnect neither skips nor repeats recorded events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.errors import NotFound, Unavailable, Unprocessable
from core.problems import Problem, execution_problem
from workflows.messages import EventsRequest, ExecutionEvent, LogEntry

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})
"""Event types that say how an execution ended."""

STUCK: Final = "stuck"
"""Event type: the execution's workflow task keeps failing; ``data`` is the problem."""

RECOVERED: Final = "recovered"
"""Event type: a workflow task went through again after ``stuck``."""

KEEP_ALIVE_S = 15.0
"""How long history may stay quiet before the feed yields a keep-alive."""

LOG_LEVELS = ("debug", "info", "warning", "error")
"""Log levels from least to most severe; a ``level`` filter keeps that level and the ones after it."""

_QUERY_TIMEOUT = timedelta(seconds=5)

# A run closed without recording its own end (terminated, timed out): the feed ends it with this event.
_UNRECORDED_END = {
    WorkflowExecutionStatus.TERMINATED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.COMPLETED: "completed",
}


@dataclass(frozen=True)
class KeepAlive:
    """Yielded by the feed when history stayed quiet for the keep-alive interval."""


async def follow_events(
    client: Client, execution_id: str, *, after: int = 0, keep_alive_s: float | None = None
) -> AsyncIterator[ExecutionEvent | KeepAlive]:
    """The events of ``execution_id`` after sequence number ``after``, as they happen.

    Raises :class:`NotFound` here, before anything is yielded, when there is no such execution. Quiet
    spells of ``keep_alive_s`` (default ``KEEP_ALIVE_S``) yield a :class:`KeepAlive`. The feed ends when
    the run has closed and everything it recorded is sent: a terminal event (completed, failed, cancelled)
    may be followed by the events of ``on_error`` cleanup steps. A run that closed without recording a
    terminal event (terminated, timed out) gets one made up for it, numbered after the last.
    """
    handle = client.get_workflow_handle(execution_id)
    description = await _describe(handle)
    running = description.status == WorkflowExecutionStatus.RUNNING
    return _feed(client, handle, after=after, keep_alive_s=keep_alive_s or KEEP_ALIVE_S, running=running)


async def execution_logs(
    client: Client, execution_id: str, *, level: str | None = None, step: str | None = None
) -> list[LogEntry]:
    """The log of ``execution_id``: entries at ``level`` or more severe, of ``step`` when given."""
    minimum = _level_rank(level) if level is not None else 0
    handle = client.get_workflow_handle(execution_id)
    await _describe(handle)
    try:
        entries: list[LogEntry] = await handle.query(
            names.QUERY_LOGS, result_type=list[LogEntry], rpc_timeout=_QUERY_TIMEOUT
        )
    except (RPCError, WorkflowQueryFailedError) as exc:
        raise Unavailable("QUERY_FAILED", f"could not read the log: {exc}") from exc
    return [
        entry
        for entry in entries
        if _entry_rank(entry.level) >= minimum and (step is None or entry.step == step)
    ]


async def _feed(
    client: Client, handle: WorkflowHandle[Any, Any], *, after: int, keep_alive_s: float, running: bool
) -> AsyncIterator[ExecutionEvent | KeepAlive]:
    last = after
    woken = asyncio.Event()
    closed = asyncio.Event()
    unanswered = False
    stuck: Problem | None = None
    pump: asyncio.Task[None] | None = None
    if running:
        pump = asyncio.create_task(_watch_history(handle, woken, closed))
    else:
        closed.set()  # a closed run's history is final: no need to page through it
    try:
        woken.set()  # whatever happened before the client connected is sent at once
        while True:
            try:
                await asyncio.wait_for(woken.wait(), timeout=keep_alive_s)
            except TimeoutError:
                yield KeepAlive()
                # A query that went unanswered (no worker polling, say) is asked again at each keep-alive.
                if not unanswered:
                    continue
            woken.clear()
            # Read before asking: once the run is closed, the answer that follows is complete.
            run_closed = closed.is_set()
            events = await _events_after(handle, last)
            unanswered = events is None
            # An unanswered query may be a workflow task that keeps failing; an answer after one, its end.
            problem = stuck
            if not run_closed and (unanswered or stuck is not None):
                problem = await _problem(client, handle, stuck)
            elif run_closed and events is not None:
                problem = None  # its tasks ran to the end (maybe in the same batch that closed it)
            change = _problem_change(stuck, problem)
            stuck = problem
            if change is not None:
                yield change
            for event in events or []:
                yield event
                last = event.seq
            if run_closed:
                # Unanswered for a closed run: nobody can answer; a reconnect resumes where this left off.
                ending = await _unrecorded_end(handle, last) if events is not None else None
                if ending is not None:
                    yield ending
                return
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def _watch_history(
    handle: WorkflowHandle[Any, Any], woken: asyncio.Event, closed: asyncio.Event
) -> None:
    """Set ``woken`` on every new history event of the run; set ``closed`` when the run has ended."""
    while True:
        try:
            async for _event in handle.fetch_history_events(wait_new_event=True):
                woken.set()
        except RPCError:
            # The long poll broke (server restart, network): one more look decides whether to poll again.
            woken.set()
        try:
            description = await handle.describe()
        except RPCError:
            description = None
        # A run that continued as new goes on under the same id: follow the new run's history.
        if description is None or description.status != WorkflowExecutionStatus.RUNNING:
            closed.set()
            woken.set()
            return


async def _events_after(handle: WorkflowHandle[Any, Any], after: int) -> list[ExecutionEvent] | None:
    """New events, or None when the query could not be answered (no worker yet, first task pending)."""
    try:
        events: list[ExecutionEvent] = await handle.query(
            names.QUERY_EVENTS,
            EventsRequest(after=after),
            result_type=list[ExecutionEvent],
            rpc_timeout=_QUERY_TIMEOUT,
        )
    except (RPCError, WorkflowQueryFailedError):
        return None
    return [event for event in events if event.seq > after]


async def _problem(client: Client, handle: WorkflowHandle[Any, Any], known: Problem | None) -> Problem | None:
    """The run's problem now (``known`` when Temporal cannot be asked)."""
    try:
        return await execution_problem(client, await handle.describe())
    except RPCError:
        return known


def _problem_change(before: Problem | None, now: Problem | None) -> ExecutionEvent | None:
    """The ``stuck`` or ``recovered`` event that tells the change from ``before`` to ``now``, if any."""
    if now is not None and not now.same_as(before):
        return ExecutionEvent(seq=0, type=STUCK, at=now.since or _now(), data=asdict(now))
    if now is None and before is not None:
        return ExecutionEvent(seq=0, type=RECOVERED, at=_now(), data={"category": before.category})
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _unrecorded_end(handle: WorkflowHandle[Any, Any], last: int) -> ExecutionEvent | None:
    """The terminal event of a closed run that never recorded one (terminated, timed out), if due."""
    try:
        description = await handle.describe()
    except RPCError:
        return None
    kind = _UNRECORDED_END.get(description.status) if description.status else None
    if kind is None:
        return None
    recorded = await _events_after(handle, 0)
    if recorded is None or any(event.type in TERMINAL_EVENTS for event in recorded):
        return None
    seq = max([last, *(event.seq for event in recorded)]) + 1
    at = description.close_time or datetime.now(UTC)
    return ExecutionEvent(
        seq=seq,
        type=kind,
        at=at.isoformat(),
        data={"temporal_status": description.status.name if description.status else None},
    )


def _level_rank(level: str) -> int:
    name = _normalise(level)
    if name not in LOG_LEVELS:
        raise Unprocessable(
            "INVALID_LEVEL", f"level is one of {', '.join(LOG_LEVELS)}; got {level!r}", {"field": "level"}
        )
    return LOG_LEVELS.index(name)


def _entry_rank(level: str) -> int:
    name = _normalise(level)
    return LOG_LEVELS.index(name) if name in LOG_LEVELS else LOG_LEVELS.index("info")


def _normalise(level: str) -> str:
    name = level.strip().lower()
    return {"warn": "warning", "critical": "error", "fatal": "error"}.get(name, name)


async def _describe(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    try:
        return await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(
                "EXECUTION_NOT_FOUND", f"no execution {handle.id}", {"execution_id": handle.id}
            ) from None
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
