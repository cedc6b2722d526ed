"""API keys: ``cvk_<id>_<secret>``; the store keeps the id and a SHA-256 of the secret, never the secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import BadRequest, NotFound
from core.models import ApiKey, utcnow

PREFIX = "cvk"


class Role(IntEnum):
    """Roles in increasing power: each includes what the ones below may do."""

    viewer = 1
    operator = 2
    admin = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and role."""

    name: str
    role: Role
    key_id: str | None = None


def _digest(secret: str) -> str:
    # The secret is 32 random bytes, so a plain SHA-256 is as strong as a slow hash here.
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(
    session: AsyncSession, *, name: str, role: Role, key: str | None = None
) -> tuple[ApiKey, str]:
    """A new key; returns the row and the full key text, which is shown this once."""
    if key is not None:
        key_id, secret = _split(key)
        existing = await session.get(ApiKey, key_id)
        if existing is not None:
            return existing, key
    else:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiKey(id=key_id, name=name, role=role.name, secret_hash=_digest(secret))
    session.add(row)
    await session.commit()
    return row, f"{PREFIX}_{key_id}_{secret}"


async def verify_key(session: AsyncSession, *, key: str) -> Principal | None:
    """The principal a presented key stands for, or None when it is unknown, wrong or revoked."""
    try:
        key_id, secret = _split(key)
    except BadRequest:
        return None
    row = await session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(secret)):
        return None
    return Principal(name=row.name, role=Role[row.role], key_id=row.id)


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, newest first (hashes included; the API leaves them out)."""
    return list((await session.exec(select(ApiKey).order_by(col(ApiKey.created_at).desc()))).all())


async def revoke_key(session: AsyncSession, *, key_id: str) -> ApiKey:
    """Revoke a key; requests with it fail from now on."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("API_KEY_NOT_FOUND", f"no API key {key_id!r}", {"id": key_id})
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.commit()
    return row


def _split(key: str) -> tuple[str, str]:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) < 16:
        raise BadRequest("INVALID_API_KEY", "an API key looks like cvk_<id>_<secret>")
    return parts[1], parts[2]
