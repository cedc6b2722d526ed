"""Definitions: create and version, validate, list, read, publish, diff, graph, archive."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from api.auth import Admin, Viewer
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.documents import DOCUMENT_BODY, read_document
from core import definitions as store
from core.diff import diff_documents
from core.executions import forget_plans
from core.mermaid import definition_flowchart
from core.models import Definition, DefinitionVersion
from core.schedules import repoint_schedules
from workflows.definition import DefinitionInvalid, Problem, parse_structure

router = APIRouter(prefix="/api/v1/definitions", tags=["definitions"])


class DefinitionSummary(BaseModel):
    name: str
    description: str | None
    active_version: int | None
    latest_version: int
    archived: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Definition) -> DefinitionSummary:
        return cls.model_validate(row, from_attributes=True)


class VersionInfo(BaseModel):
    version: int
    content_hash: str
    created_at: datetime
    published_at: datetime | None
    active: bool


class DefinitionDetail(DefinitionSummary):
    version: int
    document: dict[str, Any]


class SaveResponse(BaseModel):
    name: str
    version: int
    status: Literal["published", "draft"]
    created: bool
    active_version: int | None


class ValidationReport(BaseModel):
    valid: bool
    problems: list[Problem]


class DiffResponse(BaseModel):
    name: str
    from_version: int
    to_version: int
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[str]
    fields_changed: list[str]
    unified: str


def _version_info(row: DefinitionVersion, definition: Definition) -> VersionInfo:
    return VersionInfo(
        version=row.version,
        content_hash=row.content_hash,
        created_at=row.created_at,
        published_at=row.published_at,
        active=definition.active_version == row.version,
    )


@router.post(
    "",
    status_code=201,
    response_model=SaveResponse,
    openapi_extra=DOCUMENT_BODY,
    responses={200: {"model": SaveResponse, "description": "content unchanged: the latest version"}},
)
async def create_definition(
    request: Request,
    response: Response,
    session: SessionDep,
    _caller: Admin,
    publish: bool = Query(False, description="make the new version active at once"),
) -> SaveResponse:
    """Create a definition or add a version when the content changed (the first version is published)."""
    document = await read_document(request)
    saved = await store.save_definition(session, document=document, publish=publish)
    forget_plans(saved.definition.name)
    if not saved.created:
        response.status_code = 200
    active = saved.definition.active_version
    return SaveResponse(
        name=saved.definition.name,
        version=saved.version.version,
        status="published" if active == saved.version.version else "draft",
        created=saved.created,
        active_version=active,
    )


@router.post("/validate", response_model=ValidationReport, openapi_extra=DOCUMENT_BODY)
async def validate_definition(request: Request, _caller: Viewer) -> ValidationReport:
    """Validate a document without storing it; every problem comes with its JSON path."""
    document = await read_document(request)
    try:
        await store.validated(document)
    except DefinitionInvalid as exc:
        return ValidationReport(valid=False, problems=exc.problems)
    return ValidationReport(valid=True, problems=[])


@router.get("", response_model=list[DefinitionSummary])
async def list_definitions(
    session: SessionDep, _caller: Viewer, include_archived: bool = False
) -> list[DefinitionSummary]:
    """Every definition with its active and latest version."""
    return [
        DefinitionSummary.of(row)
        for row in await store.list_definitions(session, include_archived=include_archived)
    ]


@router.get("/{name}", response_model=DefinitionDetail)
async def get_definition(session: SessionDep, _caller: Viewer, name: str) -> DefinitionDetail:
    """The active version's document (the latest one if none is published) and metadata."""
    definition = await store.get_definition(session, name=name)
    version = await store.get_version(
        session, name=name, version=definition.active_version or definition.latest_version
    )
    return DefinitionDetail(
        **DefinitionSummary.of(definition).model_dump(), version=version.version, document=version.document
    )


@router.get("/{name}/versions", response_model=list[VersionInfo])
async def list_versions(session: SessionDep, _caller: Viewer, name: str) -> list[VersionInfo]:
    """Every version, oldest first."""
    definition = await store.get_definition(session, name=name)
    return [_version_info(row, definition) for row in await store.list_versions(session, name=name)]


class VersionDetail(VersionInfo):
    name: str
    document: dict[str, Any]


@router.get("/{name}/versions/{version}", response_model=VersionDetail)
async def get_version(session: SessionDep, _caller: Viewer, name: str, version: int) -> VersionDetail:
    """One version's document."""
    definition = await store.get_definition(session, name=name)
    row = await store.get_version(session, name=name, version=version)
    return VersionDetail(**_version_info(row, definition).model_dump(), name=name, document=row.document)


@router.get("/{name}/versions/{a}/diff/{b}", response_model=DiffResponse)
async def diff_versions(session: SessionDep, _caller: Viewer, name: str, a: int, b: int) -> DiffResponse:
    """What changed from version ``a`` to version ``b``."""
    old = await store.get_version(session, name=name, version=a)
    new = await store.get_version(session, name=name, version=b)
    changes = diff_documents(old.document, new.document, old_label=f"{name} v{a}", new_label=f"{name} v{b}")
    return DiffResponse(name=name, from_version=a, to_version=b, **changes)


@router.post("/{name}/versions/{version}/publish", response_model=SaveResponse)
async def publish_version(
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    _caller: Admin,
    name: str,
    version: int,
) -> SaveResponse:
    """Make ``version`` the active one (atomic); running executions keep theirs, schedules start it next."""
    definition = await store.publish_version(session, name=name, version=version)
    forget_plans(name)
    await repoint_schedules(session, temporal, name=name, task_queue=settings.task_queue)
    return SaveResponse(
        name=name,
        version=version,
        status="published",
        created=False,
        active_version=definition.active_version,
    )


@router.get("/{name}/graph", response_class=PlainTextResponse)
async def graph(
    session: SessionDep,
    _caller: Viewer,
    name: str,
    format: Literal["mermaid"] = "mermaid",
    version: int | None = None,
) -> str:
    """The flow as a Mermaid flowchart (paste it into any Markdown that renders Mermaid)."""
    definition = await store.get_definition(session, name=name)
    chosen = version or definition.active_version or definition.latest_version
    row = await store.get_version(session, name=name, version=chosen)
    # Stored versions were valid when saved; checks added since must not hide their graph.
    return definition_flowchart(parse_structure(row.document))


class ArchiveResponse(BaseModel):
    name: str
    archived: bool


@router.delete("/{name}", response_model=ArchiveResponse)
async def archive_definition(session: SessionDep, _caller: Admin, name: str) -> ArchiveResponse:
    """Archive: no new executions; running ones continue. Posting the definition again restores it."""
    definition = await store.archive_definition(session, name=name)
    forget_plans(name)
    return ArchiveResponse(name=definition.name, archived=definition.archived)
