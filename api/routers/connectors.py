"""Connectors: named SQL databases and HTTP APIs for ``database_query`` and ``data_fetch`` steps.

Credentials go in once and never come out: they are stored sealed, and every answer shows the configuration
with passwords, tokens and sensitive headers masked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import Admin, Viewer
from api.deps import SealerDep, SessionDep
from core import connectors as store
from core.connectors import ConnectorType
from core.models import Connector

router = APIRouter(prefix="/api/v1/connectors", tags=["connectors"])


class ConnectorRequest(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="what steps call it by")
    type: ConnectorType = Field(description="sql or http")
    config: dict[str, Any] = Field(
        description=(
            "sql: {url, allow_writes}; http: {base_url, auth: {type: bearer|api_key|basic, ...}, headers, "
            "paging: {style: page|cursor, ...}, timeout}"
        )
    )


class ConnectorReplace(BaseModel):
    type: ConnectorType
    config: dict[str, Any]


class ConnectorView(BaseModel):
    name: str
    type: str
    config: dict[str, Any] = Field(description="the configuration with credentials masked as ***")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Connector) -> ConnectorView:
        return cls(
            name=row.name,
            type=row.type,
            config=row.config,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@router.post("", status_code=201, response_model=ConnectorView)
async def create_connector(
    request: ConnectorRequest, session: SessionDep, sealer: SealerDep, _caller: Admin
) -> ConnectorView:
    """Create a connector; 409 when the name is taken, 422 with JSON paths when the config is wrong."""
    row = await store.create_connector(
        session, sealer=sealer, name=request.name, type=request.type, config=request.config
    )
    return ConnectorView.of(row)


@router.get("", response_model=list[ConnectorView])
async def list_connectors(session: SessionDep, _caller: Viewer) -> list[ConnectorView]:
    """Every connector, credentials masked."""
    return [ConnectorView.of(row) for row in await store.list_connectors(session)]


@router.get("/{name}", response_model=ConnectorView)
async def get_connector(name: str, session: SessionDep, _caller: Viewer) -> ConnectorView:
    """One connector, credentials masked."""
    return ConnectorView.of(await store.get_connector(session, name=name))


@router.put("/{name}", response_model=ConnectorView)
async def replace_connector(
    name: str, request: ConnectorReplace, session: SessionDep, sealer: SealerDep, _caller: Admin
) -> ConnectorView:
    """Replace a connector's configuration, e.g. to rotate credentials; running steps pick it up next time."""
    row = await store.replace_connector(
        session, sealer=sealer, name=name, type=request.type, config=request.config
    )
    return ConnectorView.of(row)


@router.delete("/{name}", response_model=ConnectorView)
async def delete_connector(name: str, session: SessionDep, _caller: Admin) -> ConnectorView:
    """Delete a connector; steps naming it fail with ``ConnectorNotFound`` from then on."""
    return ConnectorView.of(await store.delete_connector(session, name=name))
