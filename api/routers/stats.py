"""Execution statistics for dashboards."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import Viewer
from api.deps import TemporalDep
from core import stats as service

router = APIRouter(prefix="/api/v1", tags=["stats"])


class HourBucketView(BaseModel):
    hour: str = Field(description="start of the hour, UTC")
    closed: int
    completed: int
    failed: int


class StatsView(BaseModel):
    time_range: str
    since: str
    until: str
    definition: str | None
    started: int = Field(description="executions started in the range")
    state_distribution: dict[str, int] = Field(description="executions started in the range, per state")
    active_executions: int = Field(description="executions running now, whenever they started")
    stuck_executions: int | None = Field(
        description="of those, the ones whose workflow task keeps failing (each shows its `problem`); "
        "null when this Temporal has no TemporalReportedProblems search attribute to count them by"
    )
    closed: int = Field(description="executions closed in the range")
    failed: int = Field(description="executions closed in the range as failed or timed out")
    error_rate: float | None = Field(description="failed / closed; null when none closed")
    throughput_per_hour: list[HourBucketView] = Field(description="closed executions per hour of the range")
    avg_duration_s: float | None = Field(description="of the executions that completed or failed in range")
    p95_duration_s: float | None
    error_breakdown: dict[str, int] = Field(
        description="executions started in the range per error type (ConveyorError)"
    )
    sampled: bool = Field(
        description="true when more than sample_limit executions closed or erred in the range: throughput, "
        "durations and the error breakdown then cover only the first sample_limit of them"
    )
    sample_limit: int


@router.get("/stats", response_model=StatsView)
async def execution_stats(
    temporal: TemporalDep,
    _caller: Viewer,
    time_range: str = Query("24h", description="how far back: 1h, 24h, 7d … (at most 31d)"),
    definition: str | None = Query(None, description="only executions of this definition"),
) -> StatsView:
    """State distribution, throughput per hour, error rate, avg and p95 duration, active executions."""
    stats = await service.execution_stats(temporal, time_range=time_range, definition=definition)
    return StatsView(**asdict(stats))
