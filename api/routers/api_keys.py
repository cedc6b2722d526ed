"""API keys (admin): create (the key is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import Admin
from api.deps import SessionDep
from core import api_keys as store
from core.api_keys import Role

router = APIRouter(prefix="/api/v1/api-keys", tags=["api keys"])


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "operator", "admin"] = Field(
        description="viewer (read), operator (run and control), admin (everything)"
    )


class KeyView(BaseModel):
    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class NewKey(KeyView):
    key: str = Field(description="the API key; shown only in this answer")


@router.post("", status_code=201, response_model=NewKey)
async def create_key(request: KeyRequest, session: SessionDep, _caller: Admin) -> NewKey:
    """Create a key; store the returned ``key``, it cannot be shown again."""
    row, key = await store.create_key(session, name=request.name, role=Role[request.role])
    return NewKey(**row.model_dump(exclude={"secret_hash"}), key=key)


@router.get("", response_model=list[KeyView])
async def list_keys(session: SessionDep, _caller: Admin) -> list[KeyView]:
    """Every key (never the key itself)."""
    return [KeyView(**row.model_dump(exclude={"secret_hash"})) for row in await store.list_keys(session)]


@router.delete("/{key_id}", response_model=KeyView)
async def revoke_key(key_id: str, session: SessionDep, _caller: Admin) -> KeyView:
    """Revoke a key at once."""
    row = await store.revoke_key(session, key_id=key_id)
    return KeyView(**row.model_dump(exclude={"secret_hash"}))
