"""Pipelines: upload items, list stages, metrics per stage, pause/resume a stage, retry a stage's failures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from api.auth import Operator, Viewer
from api.deps import SessionDep, SettingsDep, TemporalDep
from core import names
from core import pipelines as service
from core.errors import BadRequest, TooLarge, Unprocessable, UnsupportedMedia
from core.payloads import BlobStore
from core.untrusted import InputRefused, parse_json

router = APIRouter(prefix="/api/v1", tags=["pipelines"])


class ItemAnswer(BaseModel):
    execution_id: str
    run_id: str | None
    pipeline: str
    version: int
    stage: str = Field(description="where the item is: NEW until its first stage picks it up")
    state: str
    created: bool
    file: dict[str, Any] | None = Field(default=None, description="blob key, filename, content type, size")


class StageView(BaseModel):
    name: str
    label: str
    step: str
    task_queue: str
    paused: bool
    queue_length: int
    pollers: int


class StageMetrics(BaseModel):
    stage: str
    label: str
    task_queue: str
    queue_length: int = Field(description="items waiting in the stage's task queue (Temporal's backlog)")
    backlog_age_s: float
    pollers: int = Field(description="workers polling the stage's queue")
    paused: bool
    in_flight: int = Field(description="items a worker is working on")
    parked: int = Field(description="items SUSPENDED at this stage after a failure")
    processed: int
    failed: int = Field(description="failed attempts (retried or parked)")
    avg_duration_ms: float | None
    p95_duration_ms: float | None


class PipelineMetrics(BaseModel):
    pipeline: str
    queue_lengths: dict[str, int]
    workers_polling: dict[str, int]
    in_flight: int
    processed: int
    failed: int
    stages: list[StageMetrics]


class RetryAnswer(BaseModel):
    stage: str
    matched: int
    succeeded: int
    failed: list[dict[str, Any]]


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "a JSON object merged into the input"},
                    },
                }
            },
            "application/json": {"schema": {"type": "object", "description": "the item's input"}},
        },
    }
}


@router.post(
    "/pipelines/{name}/items",
    response_model=ItemAnswer,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={200: {"model": ItemAnswer, "description": "the same `id` again: the item it started"}},
)
async def add_item(
    name: str,
    request: Request,
    response: Response,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    caller: Operator,
    id: str | None = Query(default=None, description="your idempotency key for this item"),
) -> ItemAnswer:
    """Add an item: a multipart ``file`` (stored as a blob; ``metadata`` optional) or a JSON object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: service.Upload | None = None
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise Unprocessable("INPUT_INVALID", "the form needs a `file` part", {"field": "file"})
        content = await file.read(settings.max_upload_bytes + 1)
        if len(content) > settings.max_upload_bytes:
            raise TooLarge(
                "PAYLOAD_TOO_LARGE",
                f"the file is larger than {settings.max_upload_bytes} bytes",
                {"field": "file"},
            )
        upload = service.Upload(content, file.filename or "upload", file.content_type or "")
        data = _metadata(form.get("metadata"))
    elif kind == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise BadRequest("INVALID_JSON", "the body is not JSON", {"field": "body"}) from None
        if not isinstance(data, dict):
            raise Unprocessable("INPUT_INVALID", "the item must be a JSON object", {"field": "body"})
        if "file" in data:  # a blob key is only ever the one an upload stored
            raise Unprocessable(
                "INPUT_INVALID", "`file` is set by a multipart upload", {"field": "body.file"}
            )
    else:
        raise UnsupportedMedia(
            "UNSUPPORTED_MEDIA_TYPE",
            "send multipart/form-data with a `file`, or application/json",
            {"content_type": kind},
        )
    started, document = await service.add_item(
        session,
        temporal,
        BlobStore(settings.blob_dir),
        task_queue=settings.task_queue,
        pipeline=name,
        data=data,
        upload=upload,
        caller_id=id,
        actor=caller.name,
    )
    if not started.created:
        response.status_code = 200
    return ItemAnswer(
        execution_id=started.execution_id,
        run_id=started.run_id,
        pipeline=name,
        version=started.version,
        stage=names.STAGE_NEW,
        state=started.state,
        created=started.created,
        file=document.get("file") if upload is not None else None,
    )


def _metadata(raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = parse_json(raw, what="`metadata`") if isinstance(raw, str) else None
    except InputRefused as exc:
        if exc.error_code == "INVALID_JSON":
            value = None
        else:  # valid JSON holding what JSON data cannot: say where
            raise InputRefused(exc.error_code, exc.message, {"field": "metadata", **exc.details}) from None
    if not isinstance(value, dict):
        raise Unprocessable("INPUT_INVALID", "`metadata` must be a JSON object", {"field": "metadata"})
    if "file" in value:
        raise Unprocessable("INPUT_INVALID", "`metadata` may not set `file`", {"field": "metadata.file"})
    return value


@router.get("/pipelines/{name}/stages", response_model=list[StageView])
async def list_stages(
    name: str, session: SessionDep, temporal: TemporalDep, _caller: Viewer
) -> list[StageView]:
    """The stages in the order items reach them, with their task queues and whether they are paused."""
    stages = await service.pipeline_stages(session, name)
    views = []
    for stage in stages:
        queue = await service.describe_queue(temporal, stage.task_queue)
        views.append(
            StageView(
                **asdict(stage), paused=queue.paused, queue_length=queue.queue_length, pollers=queue.pollers
            )
        )
    return views


@router.get("/pipelines/{name}/metrics", response_model=PipelineMetrics)
async def pipeline_metrics(
    name: str, session: SessionDep, temporal: TemporalDep, _caller: Viewer
) -> PipelineMetrics:
    """Per stage: queue length, workers polling, in flight, parked, processed, failed, avg/p95 duration."""
    stages = await service.pipeline_stages(session, name)
    report = [StageMetrics(**row) for row in await service.stage_metrics(session, temporal, name, stages)]
    return PipelineMetrics(
        pipeline=name,
        queue_lengths={row.stage: row.queue_length for row in report},
        workers_polling={row.stage: row.pollers for row in report},
        in_flight=sum(row.in_flight for row in report),
        processed=sum(row.processed for row in report),
        failed=sum(row.failed for row in report),
        stages=report,
    )


@router.post("/pipelines/{name}/stages/{stage}/pause", response_model=StageView)
async def pause_stage(
    name: str, stage: str, session: SessionDep, temporal: TemporalDep, caller: Operator
) -> StageView:
    """Stop handing this stage's items to its workers: they wait in its queue until ``resume``. Items
    already being worked on finish."""
    return await _set_paused(name, stage, session, temporal, caller.name, paused=True)


@router.post("/pipelines/{name}/stages/{stage}/resume", response_model=StageView)
async def resume_stage(
    name: str, stage: str, session: SessionDep, temporal: TemporalDep, caller: Operator
) -> StageView:
    """Hand this stage's waiting items to its workers again."""
    return await _set_paused(name, stage, session, temporal, caller.name, paused=False)


async def _set_paused(
    name: str, stage: str, session: SessionDep, temporal: TemporalDep, actor: str, *, paused: bool
) -> StageView:
    chosen = service.find_stage(await service.pipeline_stages(session, name), stage)
    queue = await service.set_paused(temporal, chosen, paused=paused, actor=actor)
    return StageView(
        **asdict(chosen), paused=queue.paused, queue_length=queue.queue_length, pollers=queue.pollers
    )


@router.post("/pipelines/{name}/stages/{stage}/retry", response_model=RetryAnswer)
async def retry_stage(
    name: str, stage: str, session: SessionDep, temporal: TemporalDep, caller: Operator
) -> RetryAnswer:
    """Retry every item parked or failed at this stage, in one call."""
    chosen = service.find_stage(await service.pipeline_stages(session, name), stage)
    reports = await service.retry_stage(temporal, name, chosen, actor=caller.name)
    return RetryAnswer(
        stage=chosen.name,
        matched=sum(r.matched for r in reports),
        succeeded=sum(r.succeeded for r in reports),
        failed=[failure for r in reports for failure in r.failed],
    )
