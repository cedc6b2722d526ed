"""Lifecycles: the built-in ones (Task, ActionPlan) and custom ones defined through the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, NotFound, Unprocessable
from core.models import StoredLifecycle
from workflows.lifecycles import BUILT_IN, Lifecycle, LifecycleInvalid, lifecycle_document, parse_lifecycle


class LifecycleProblems(Unprocessable):
    """A lifecycle document that does not validate; details list ``{path, message}`` problems."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(
            "LIFECYCLE_INVALID", f"the lifecycle has {len(problems)} problem(s)", {"problems": problems}
        )


async def get_lifecycle(session: AsyncSession, entity_type: str) -> Lifecycle:
    """The lifecycle of ``entity_type``: built in, or stored; 404 when there is none."""
    if entity_type in BUILT_IN:
        return BUILT_IN[entity_type]
    row = await session.get(StoredLifecycle, entity_type)
    if row is None:
        raise NotFound(
            "LIFECYCLE_NOT_FOUND",
            f"no lifecycle for entity type {entity_type!r}",
            {"entity_type": entity_type},
        )
    return parse_lifecycle(row.document)


async def list_lifecycles(session: AsyncSession) -> list[Lifecycle]:
    """The built-in lifecycles, then the custom ones by type."""
    rows = (await session.exec(select(StoredLifecycle).order_by(col(StoredLifecycle.type)))).all()
    return [*BUILT_IN.values(), *(parse_lifecycle(row.document) for row in rows)]


async def create_lifecycle(session: AsyncSession, *, document: dict[str, Any], actor: str) -> Lifecycle:
    """Validate and store a custom lifecycle; a type is defined once (409 on a repeat or a built-in)."""
    try:
        lifecycle = parse_lifecycle(document)
    except LifecycleInvalid as exc:
        raise LifecycleProblems(exc.problems) from None
    if lifecycle.type in BUILT_IN or await session.get(StoredLifecycle, lifecycle.type) is not None:
        raise Conflict(
            "LIFECYCLE_EXISTS",
            f"entity type {lifecycle.type!r} already has a lifecycle",
            {"type": lifecycle.type},
        )
    session.add(
        StoredLifecycle(type=lifecycle.type, document=lifecycle_document(lifecycle), created_by=actor)
    )
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "LIFECYCLE_EXISTS",
            f"entity type {lifecycle.type!r} already has a lifecycle",
            {"type": lifecycle.type},
        ) from None
    return lifecycle


def state_diagram(lifecycle: Lifecycle) -> str:
    """The lifecycle as a Mermaid ``stateDiagram-v2``, as the product notes draw them."""
    lines = ["stateDiagram-v2", f"    [*] --> {lifecycle.initial}"]
    for rule in lifecycle.transitions:
        label = rule.label or rule.to_state
        if rule.guard:
            label += f" [{rule.guard.strip('{} ')}]"
        lines.append(f"    {rule.from_state} --> {rule.to_state} : {_escape(label)}")
    lines += [f"    {state} --> [*]" for state in lifecycle.terminal]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    # Mermaid ends a label at a line break and reads ':' as a new label; '#58;' is its escape for ':'.
    return text.replace("\n", " ").replace(":", "#58;")
