"""Execution statistics over a time range, computed from Temporal visibility.

Counts come from ``count_workflows`` and are exact (as exact as visibility, which trails by a moment).
Throughput, durations and the error breakdown need each execution, so they are read from a listing capped at
``SAMPLE_LIMIT`` executions; ``sampled`` says when the cap was hit and those figures cover only part.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core import names
from core.errors import BadRequest, Unavailable, Unprocessable
from core.problems import STUCK_CLAUSE
from workflows.durations import format_duration, parse_duration
from workflows.states import ExecutionState

SAMPLE_LIMIT = 10_000
"""At most this many executions are listed for throughput, durations and the error breakdown."""

MAX_RANGE = timedelta(days=31)
"""The longest ``time_range``: hourly throughput buckets stay a readable list."""

STUCK_EXECUTIONS = Gauge(
    "conveyor_executions_stuck",
    "Running executions whose workflow task keeps failing (Temporal's TemporalReportedProblems); NaN when "
    "Temporal could not be asked",
)
"""Refreshed by the API's ``/metrics`` through :class:`StuckGauge`."""

STUCK_GAUGE_TTL_S = 15.0
"""How long the API's ``/metrics`` shows one count of stuck executions before it counts again."""
_STUCK_COUNT_TIMEOUT_S = 5.0

_FAILED = (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT)
_TIMED = {WorkflowExecutionStatus.COMPLETED, *_FAILED}


@dataclass
class HourBucket:
    """Executions that closed within one hour (``hour`` is its start, UTC)."""

    hour: str
    closed: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class Stats:
    """What ``GET /api/v1/stats`` answers."""

    time_range: str
    since: str
    until: str
    definition: str | None
    started: int
    state_distribution: dict[str, int]
    active_executions: int
    stuck_executions: int | None
    """Running now (whenever started) with a workflow task that keeps failing; None when this Temporal
    has no ``TemporalReportedProblems`` to count them by."""
    closed: int
    failed: int
    error_rate: float | None
    throughput_per_hour: list[HourBucket]
    avg_duration_s: float | None
    p95_duration_s: float | None
    error_breakdown: dict[str, int]
    sampled: bool
    sample_limit: int = SAMPLE_LIMIT


def parse_time_range(text: str) -> timedelta:
    """``1h``, ``24h``, ``7d`` … as a timedelta; :class:`Unprocessable` when it is not one we accept."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise Unprocessable("INVALID_TIME_RANGE", str(exc), {"field": "time_range"}) from None
    span = timedelta(seconds=seconds)
    if span <= timedelta(0) or span > MAX_RANGE:
        raise Unprocessable(
            "INVALID_TIME_RANGE",
            f"time_range is more than 0s and at most {format_duration(MAX_RANGE.total_seconds())}",
            {"field": "time_range"},
        )
    return span


async def execution_stats(
    client: Client, *, time_range: str = "24h", definition: str | None = None, now: datetime | None = None
) -> Stats:
    """State distribution, throughput, error rate, durations and error types of the executions in range.

    Executions *started* in the range make the state distribution and the error breakdown; executions
    *closed* in the range make throughput, error rate and durations; active and stuck executions are all
    running now.
    """
    span = parse_time_range(time_range)
    until = now or datetime.now(UTC)
    since = until - span
    ours = f"WorkflowType = '{names.DEFINITION_WORKFLOW}'"
    if definition is not None:
        ours += f" AND {names.SA_DEFINITION.name} = '{_quote(definition)}'"
    started = f"{ours} AND StartTime > '{since.isoformat()}'"
    # A run that continued as new is not an execution that ended: its successor goes on.
    closed = (
        f"{ours} AND CloseTime > '{since.isoformat()}'"
        " AND ExecutionStatus != 'Running' AND ExecutionStatus != 'ContinuedAsNew'"
    )
    states = list(ExecutionState)
    try:
        stuck, counts = await asyncio.gather(
            _stuck_count(client, ours),
            _counts(
                client,
                started,
                f"{ours} AND ExecutionStatus = 'Running'",
                closed,
                f"{closed} AND ExecutionStatus IN ('Failed', 'TimedOut')",
                *(f"{started} AND {names.SA_STATE.name} = '{state.value}'" for state in states),
            ),
        )
        closed_runs, errored_runs = await asyncio.gather(
            _list(client, closed), _list(client, f"{started} AND {names.SA_ERROR.name} IS NOT NULL")
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise BadRequest("INVALID_FILTER", exc.message) from exc
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    total, active, closed_count, failed_count, *per_state = counts

    durations = sorted(
        (run.close_time - run.start_time).total_seconds()
        for run in closed_runs
        if run.close_time is not None and run.status in _TIMED
    )
    errors = Counter(
        value for run in errored_runs if (value := run.typed_search_attributes.get(names.SA_ERROR))
    )
    sampled = len(closed_runs) >= SAMPLE_LIMIT or len(errored_runs) >= SAMPLE_LIMIT
    return Stats(
        time_range=time_range,
        since=since.isoformat(),
        until=until.isoformat(),
        definition=definition,
        started=total,
        state_distribution={state.value: n for state, n in zip(states, per_state, strict=True)},
        active_executions=active,
        stuck_executions=stuck,
        closed=closed_count,
        failed=failed_count,
        error_rate=failed_count / closed_count if closed_count else None,
        throughput_per_hour=_hourly(closed_runs, since, until),
        avg_duration_s=sum(durations) / len(durations) if durations else None,
        p95_duration_s=durations[math.ceil(0.95 * len(durations)) - 1] if durations else None,
        error_breakdown=dict(errors.most_common()),
        sampled=sampled,
    )


class StuckGauge:
    """``conveyor_executions_stuck`` for one API process, counted at most once per ``ttl_s``.

    ``/metrics`` is public and each count is a visibility query, so scrapes must not set Temporal's load:
    within the window they show the last count (or the NaN of a count that failed), and scrapes that arrive
    while a count runs wait for it rather than starting their own.
    """

    def __init__(self, client: Client, ttl_s: float = STUCK_GAUGE_TTL_S) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._fresh_until = -math.inf
        self._counting = asyncio.Lock()

    async def refresh(self) -> None:
        """Count again when the last count is older than the window."""
        async with self._counting:
            if time.monotonic() < self._fresh_until:
                return
            try:
                async with asyncio.timeout(_STUCK_COUNT_TIMEOUT_S):
                    stuck = await _stuck_count(self._client, f"WorkflowType = '{names.DEFINITION_WORKFLOW}'")
            except (RPCError, TimeoutError):
                stuck = None  # Temporal did not answer in time, or cannot count them
            STUCK_EXECUTIONS.set(math.nan if stuck is None else stuck)
            self._fresh_until = time.monotonic() + self._ttl_s


async def _stuck_count(client: Client, ours: str) -> int | None:
    """How many of ``ours`` are stuck; None when the server rejects ``TemporalReportedProblems`` (a
    Temporal older than the attribute): the rest of the stats still answer."""
    try:
        return await _count(client, f"{ours} AND {STUCK_CLAUSE}")
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            return None
        raise


def _hourly(runs: list[WorkflowExecution], since: datetime, until: datetime) -> list[HourBucket]:
    first = since.replace(minute=0, second=0, microsecond=0)
    hours = int((until - first) // timedelta(hours=1)) + 1
    buckets = [HourBucket(hour=(first + timedelta(hours=i)).isoformat()) for i in range(hours)]
    for run in runs:
        if run.close_time is None:
            continue
        index = int((run.close_time.astimezone(UTC) - first) // timedelta(hours=1))
        if not 0 <= index < hours:
            continue
        bucket = buckets[index]
        bucket.closed += 1
        if run.status == WorkflowExecutionStatus.COMPLETED:
            bucket.completed += 1
        elif run.status in _FAILED:
            bucket.failed += 1
    return buckets


async def _counts(client: Client, *queries: str) -> list[int]:
    return list(await asyncio.gather(*(_count(client, query) for query in queries)))


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _list(client: Client, query: str) -> list[WorkflowExecution]:
    return [run async for run in client.list_workflows(query, limit=SAMPLE_LIMIT, page_size=1000)]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
