"""Lifecycles: the state machines for UI introspection (JSON or a Mermaid diagram), and custom ones."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body
from fastapi.responses import PlainTextResponse, Response

from api.auth import Admin, Viewer
from api.deps import SessionDep
from core import lifecycles as store
from workflows.lifecycles import ROLE_PERMISSIONS, lifecycle_document

router = APIRouter(prefix="/api/v1/lifecycles", tags=["lifecycles"])


@router.get("")
async def list_lifecycles(session: SessionDep, _caller: Viewer) -> dict[str, Any]:
    """Every lifecycle (built in and custom), and which permissions each API key role holds."""
    return {
        "items": [lifecycle_document(lc) for lc in await store.list_lifecycles(session)],
        "role_permissions": {role: sorted(perms) for role, perms in ROLE_PERMISSIONS.items()},
    }


@router.get(
    "/{entity_type}",
    response_model=None,
    responses={
        200: {
            "description": "the lifecycle as JSON, or with ?format=mermaid its state diagram",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def read(
    session: SessionDep, _caller: Viewer, entity_type: str, format: Literal["json", "mermaid"] = "json"
) -> dict[str, Any] | Response:
    """One lifecycle: states, transitions with guards and permissions, SLA and automation rules;
    ``?format=mermaid`` gives its state diagram."""
    lifecycle = await store.get_lifecycle(session, entity_type)
    if format == "mermaid":
        return PlainTextResponse(store.state_diagram(lifecycle))
    return lifecycle_document(lifecycle)


@router.post("", status_code=201)
async def create(
    session: SessionDep,
    caller: Admin,
    document: dict[str, Any] = Body(
        examples=[
            {
                "type": "ticket",
                "states": ["open", "closed"],
                "initial": "open",
                "terminal": ["closed"],
                "transitions": [{"from": "open", "to": "closed", "permission": "UPDATE_TASK"}],
            }
        ]
    ),
) -> dict[str, Any]:
    """Define a lifecycle (admin); 422 ``LIFECYCLE_INVALID`` lists unreachable or unknown states and bad
    guards."""
    lifecycle = await store.create_lifecycle(session, document=document, actor=caller.name)
    return lifecycle_document(lifecycle)
