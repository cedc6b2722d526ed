"""Pipelines: definitions with ``stage`` steps, whose items move through stages served by their own workers.

Each stage is a task queue (``stage.<name>``). The queue length is Temporal's backlog of that queue, the
workers are its pollers, and pausing a stage sets the queue's dispatch rate to zero on the server: items keep
arriving and wait in the queue, workers stay connected, nothing is lost; resuming clears the limit. The same
pause is ``temporal task-queue config set --task-queue stage.<name> --task-queue-type activity
--queue-rps-limit 0`` from the CLI.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, UpdateTaskQueueConfigRequest
from temporalio.client import Client
from temporalio.service import RPCError

from core import control, names
from core.definitions import get_definition, get_version, list_versions
from core.errors import BadRequest, NotFound, Unavailable
from core.executions import Started, describe_execution, start_execution, visibility_query
from core.models import ExecutionRecord, StageRun
from core.payloads import BlobStore
from core.pollers import live_pollers
from workflows.definition import Definition
from workflows.steps import StageConfig, stage_queue


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline, in the order its items reach it."""

    name: str
    label: str
    step: str
    task_queue: str


def stages_of(definition: Definition) -> list[Stage]:
    """The stage steps of a definition, in document order (a stage inside a branch or loop counts once)."""
    found: dict[str, Stage] = {}
    for _, step in definition.all_steps():
        if step.type != "stage" or "stage" not in step.with_:
            continue
        config = StageConfig.model_construct(**step.with_)
        name = str(config.stage)
        queue = config.task_queue if isinstance(config.task_queue, str) else stage_queue(name)
        found.setdefault(name, Stage(name, str(config.label or name.upper()), step.id, queue))
    return list(found.values())


async def pipeline_stages(session: AsyncSession, name: str) -> list[Stage]:
    """The stages of the active version of ``name`` (the latest one when none is active), archived or not:
    items still running in an archived pipeline can be watched and operated. A definition without stages
    is not a pipeline."""
    definition = await get_definition(session, name=name)
    version = definition.active_version or max(v.version for v in await list_versions(session, name=name))
    document = (await get_version(session, name=name, version=version)).document
    stages = stages_of(Definition.model_validate(document))
    if not stages:
        raise BadRequest("NOT_A_PIPELINE", f"definition {name!r} has no stage steps", {"definition": name})
    return stages


def find_stage(stages: list[Stage], stage: str) -> Stage:
    for each in stages:
        if each.name == stage:
            return each
    known = ", ".join(s.name for s in stages)
    raise NotFound("STAGE_NOT_FOUND", f"no stage {stage!r}; stages: {known}", {"stage": stage})


@dataclass(frozen=True)
class Upload:
    """A file posted as a pipeline item."""

    content: bytes
    filename: str
    content_type: str


async def add_item(
    session: AsyncSession,
    client: Client,
    blobs: BlobStore,
    *,
    task_queue: str,
    pipeline: str,
    data: dict[str, Any],
    upload: Upload | None,
    caller_id: str | None,
    actor: str | None,
) -> tuple[Started, dict[str, Any]]:
    """Store the file (if any) as a blob and start the pipeline on it; the item is at stage NEW. Returns
    the execution and its input. The same ``caller_id`` again returns the item it started, with its file."""
    if caller_id is not None and await session.get(ExecutionRecord, f"{pipeline}/{caller_id}") is not None:
        started = await start_execution(
            session, client, task_queue=task_queue, name=pipeline, input={}, caller_id=caller_id
        )
        view = await describe_execution(client, started.execution_id)
        return started, view.get("input") or {}
    await pipeline_stages(session, pipeline)
    document = dict(data)
    if upload is not None:
        key = await asyncio.to_thread(blobs.put, upload.content)
        document["file"] = {
            "blob": key,
            "filename": upload.filename,
            "content_type": upload.content_type,
            "size": len(upload.content),
        }
    started = await start_execution(
        session,
        client,
        task_queue=task_queue,
        name=pipeline,
        input=document,
        caller_id=caller_id,
        trigger="upload" if upload is not None else "api",
        actor=actor,
    )
    return started, document


@dataclass
class QueueView:
    """What Temporal knows of one stage queue."""

    queue_length: int
    backlog_age_s: float
    pollers: int
    paused: bool


async def describe_queue(client: Client, task_queue: str, *, live_within_s: float) -> QueueView:
    """Backlog, live workers polling (seen within ``live_within_s``) and pause state of a stage's activity
    task queue."""
    try:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                report_stats=True,
                report_config=True,
            )
        )
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    limit = answer.config.queue_rate_limit
    return QueueView(
        queue_length=answer.stats.approximate_backlog_count,
        backlog_age_s=answer.stats.approximate_backlog_age.ToTimedelta().total_seconds(),
        pollers=live_pollers(answer.pollers, within_s=live_within_s),
        paused=limit.HasField("rate_limit") and limit.rate_limit.requests_per_second == 0,
    )


async def set_paused(
    client: Client, stage: Stage, *, paused: bool, actor: str | None, live_within_s: float
) -> QueueView:
    """Stop (or restart) dispatching the stage's items to its workers; the items wait in the queue."""
    request = UpdateTaskQueueConfigRequest(
        namespace=client.namespace,
        identity=actor or "conveyor",
        task_queue=stage.task_queue,
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    change = request.update_queue_rate_limit
    change.reason = f"{'paused' if paused else 'resumed'} by {actor or 'an operator'} through Conveyor"
    if paused:
        change.rate_limit.requests_per_second = 0
    try:
        await client.workflow_service.update_task_queue_config(request)
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    return await describe_queue(client, stage.task_queue, live_within_s=live_within_s)


async def stage_metrics(
    session: AsyncSession, client: Client, pipeline: str, stages: list[Stage], *, live_within_s: float
) -> list[dict[str, Any]]:
    """Per stage: queue length and pollers from Temporal, items at the stage from visibility, processed and
    failed attempts with their durations from the stage workers' records."""
    runs = (
        await session.exec(
            select(StageRun.stage, StageRun.outcome, StageRun.duration_ms).where(
                col(StageRun.pipeline) == pipeline
            )
        )
    ).all()
    queues = await asyncio.gather(
        *(describe_queue(client, stage.task_queue, live_within_s=live_within_s) for stage in stages)
    )
    at_stage = await asyncio.gather(*(_count_at(client, pipeline, stage.name) for stage in stages))
    report = []
    for stage, queue, (processing, parked) in zip(stages, queues, at_stage, strict=True):
        durations = sorted(ms for name, outcome, ms in runs if name == stage.name and outcome == "completed")
        failed = sum(1 for name, outcome, _ in runs if name == stage.name and outcome == "failed")
        report.append(
            {
                "stage": stage.name,
                "label": stage.label,
                "task_queue": stage.task_queue,
                **asdict(queue),
                # Items at the stage and PROCESSING are either waiting in the queue or being worked on.
                "in_flight": max(0, processing - queue.queue_length),
                "parked": parked,
                "processed": len(durations),
                "failed": failed,
                "avg_duration_ms": round(sum(durations) / len(durations), 1) if durations else None,
                "p95_duration_ms": round(_percentile(durations, 0.95), 1) if durations else None,
            }
        )
    return report


async def _count_at(client: Client, pipeline: str, stage: str) -> tuple[int, int]:
    base = visibility_query(definition=pipeline, stage=stage) + " AND ExecutionStatus = 'Running'"
    try:
        processing, parked = await asyncio.gather(
            client.count_workflows(f"{base} AND {names.SA_STATE.name} = 'PROCESSING'"),
            client.count_workflows(f"{base} AND {names.SA_STATE.name} = 'SUSPENDED'"),
        )
    except RPCError as exc:
        raise Unavailable("TEMPORAL_UNAVAILABLE", exc.message) from exc
    return processing.count, parked.count


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def retry_stage(
    client: Client, pipeline: str, stage: Stage, *, actor: str | None
) -> list[control.BulkReport]:
    """Retry every item parked (SUSPENDED) or failed at ``stage``, in one call."""
    return [
        await control.bulk(
            client,
            "retry",
            control.BulkFilter(definition=pipeline, stage=stage.name, state=state),
            dry_run=False,
            actor=actor,
        )
        for state in ("SUSPENDED", "FAILED")
    ]
