"""Definition store: immutable versions, atomic publish, archive. Keyword-only data functions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, NotFound
from core.models import Definition, DefinitionVersion, utcnow
from workflows import definition as model
from workflows.definition import content_hash, parse, parse_structure
from workflows.messages import ChildDefinition


@dataclass(frozen=True)
class SaveResult:
    """What saving a document did."""

    definition: Definition
    version: DefinitionVersion
    created: bool
    """False when the content equals the latest version, which is then returned unchanged."""


async def validated(document: dict[str, Any]) -> model.Definition:
    """:func:`~workflows.definition.parse` in a worker thread: it compiles every template of the document,
    seconds of CPU at its cap (``MAX_TEMPLATE_TEXT``), which must not hold the event loop. The cap, not a
    timeout, bounds it, so a document gets the same answer however busy the API is."""
    return await asyncio.to_thread(parse, document)


async def save_definition(
    session: AsyncSession, *, document: dict[str, Any], publish: bool = False
) -> SaveResult:
    """Store ``document`` as a new version when its content changed; the first version is published at once.

    Raises ``DefinitionInvalid`` before anything is written when the document is not a valid definition.
    """
    definition_model = await validated(document)
    name = definition_model.name
    digest = content_hash(document)
    for _ in range(3):  # a concurrent save of the same name takes the version number: recount and retry
        try:
            return await _save_once(
                session,
                name=name,
                document=document,
                digest=digest,
                publish=publish,
                description=definition_model.description,
            )
        except IntegrityError:
            await session.rollback()
    raise Conflict("DEFINITION_CONFLICT", f"definition {name} is being changed concurrently; try again")


async def _save_once(
    session: AsyncSession,
    *,
    name: str,
    document: dict[str, Any],
    digest: str,
    publish: bool,
    description: str | None,
) -> SaveResult:
    definition = await session.get(Definition, name)
    if definition is not None and definition.latest_version:
        latest = await get_version(session, name=name, version=definition.latest_version)
        if latest.content_hash == digest and not definition.archived:
            if publish and definition.active_version != latest.version:
                await publish_version(session, name=name, version=latest.version)
            return SaveResult(definition=definition, version=latest, created=False)
    now = utcnow()
    if definition is None:
        definition = Definition(name=name, description=description, created_at=now, updated_at=now)
        session.add(definition)
    number = definition.latest_version + 1
    version = DefinitionVersion(
        name=name, version=number, document=document, content_hash=digest, created_at=now
    )
    session.add(version)
    definition.latest_version = number
    definition.description = description
    definition.archived = False
    definition.updated_at = now
    if publish or definition.active_version is None:
        definition.active_version = number
        version.published_at = now
    await session.commit()
    return SaveResult(definition=definition, version=version, created=True)


async def list_definitions(session: AsyncSession, *, include_archived: bool = False) -> list[Definition]:
    """Definitions by name."""
    query = select(Definition).order_by(col(Definition.name))
    if not include_archived:
        query = query.where(col(Definition.archived).is_(False))
    return list((await session.exec(query)).all())


async def get_definition(session: AsyncSession, *, name: str) -> Definition:
    """The definition called ``name``; archived ones too."""
    definition = await session.get(Definition, name)
    if definition is None:
        raise NotFound("DEFINITION_NOT_FOUND", f"no definition named {name!r}", {"name": name})
    return definition


async def get_version(session: AsyncSession, *, name: str, version: int) -> DefinitionVersion:
    """One version of a definition."""
    query = select(DefinitionVersion).where(
        DefinitionVersion.name == name, DefinitionVersion.version == version
    )
    found = (await session.exec(query)).first()
    if found is None:
        raise NotFound(
            "VERSION_NOT_FOUND",
            f"definition {name!r} has no version {version}",
            {"name": name, "version": version},
        )
    return found


async def list_versions(session: AsyncSession, *, name: str) -> list[DefinitionVersion]:
    """Every version of a definition, oldest first."""
    await get_definition(session, name=name)
    query = (
        select(DefinitionVersion)
        .where(DefinitionVersion.name == name)
        .order_by(col(DefinitionVersion.version))
    )
    return list((await session.exec(query)).all())


async def runnable_version(
    session: AsyncSession, *, name: str, version: int | None = None
) -> DefinitionVersion:
    """The version an execution starts from: ``version`` if given, else the active one."""
    definition = await get_definition(session, name=name)
    if definition.archived:
        raise Conflict("DEFINITION_ARCHIVED", f"definition {name!r} is archived", {"name": name})
    if version is None:
        if definition.active_version is None:
            raise Conflict("NOT_PUBLISHED", f"definition {name!r} has no published version", {"name": name})
        version = definition.active_version
    return await get_version(session, name=name, version=version)


async def publish_version(session: AsyncSession, *, name: str, version: int) -> Definition:
    """Make ``version`` the active one in one statement; running executions keep their version."""
    chosen = await get_version(session, name=name, version=version)
    now = utcnow()
    if chosen.published_at is None:
        chosen.published_at = now
        session.add(chosen)
    definition = await get_definition(session, name=name)
    # One UPDATE in one transaction: readers see the old active version or the new one, never a mix.
    definition.active_version = version
    definition.updated_at = now
    await session.commit()
    return definition


async def archive_definition(session: AsyncSession, *, name: str) -> Definition:
    """Stop new executions of ``name``; running ones continue and versions stay readable."""
    definition = await get_definition(session, name=name)
    definition.archived = True
    definition.updated_at = utcnow()
    await session.commit()
    return definition


async def pinned_children(session: AsyncSession, *, document: dict[str, Any]) -> dict[str, ChildDefinition]:
    """Snapshots of every definition the document's ``sub_workflow`` steps run, and theirs, transitively.

    They travel in the execution's input, so a child runs the version that was current when its parent
    started, like the parent itself.
    """
    pinned: dict[str, ChildDefinition] = {}
    pending = [document]
    while pending:
        current = parse_structure(pending.pop())
        for path, step in current.all_steps():
            if step.type != "sub_workflow":
                continue
            name, version = step.with_.get("definition"), step.with_.get("version")
            if not isinstance(name, str):
                continue
            key: str = name if version is None else f"{name}@{version}"
            if key in pinned:
                continue
            try:
                row = await runnable_version(
                    session, name=name, version=version if isinstance(version, int) else None
                )
            except (NotFound, Conflict) as exc:
                raise Conflict(
                    "SUB_WORKFLOW_UNAVAILABLE",
                    f"{path}: sub_workflow {key} cannot run: {exc.message}",
                    {"path": f"{path}.with.definition", "definition": name},
                ) from None
            pinned[key] = ChildDefinition(name=name, version=row.version, definition=row.document)
            pending.append(row.document)
    return pinned
