"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from api.deps import SessionDep, SettingsDep, StuckGaugeDep, TemporalDep
from core.pollers import live_pollers

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is not ready"}})
async def ready(session: SessionDep, temporal: TemporalDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: the database and Temporal answer, and a live worker polls the main task queue."""
    checks: dict[str, Any] = {}
    try:
        await session.exec(text("select 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        described = await temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=temporal.namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        checks["temporal"] = "ok"
        checks["workers"] = live_pollers(described.pollers, within_s=settings.worker_live_window_s)
    except Exception as exc:
        checks["temporal"] = f"error: {type(exc).__name__}"
        checks["workers"] = 0
    ok = checks["database"] == "ok" and checks["temporal"] == "ok" and checks["workers"] > 0
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", response_class=Response)
async def metrics(stuck_gauge: StuckGaugeDep) -> Response:
    """Prometheus metrics of this API process, and the count of stuck executions (at most 15 s old)."""
    await stuck_gauge.refresh()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
