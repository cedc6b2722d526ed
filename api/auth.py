"""API-key authentication and role checks, used by every route through :func:`require`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep, SettingsDep
from core.api_keys import Principal, Role, verify_key
from core.errors import ConveyorError
from core.settings import AuthMode

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cvk_...`")
_DEVELOPER = Principal(name="developer (auth off)", role=Role.admin)


class Unauthenticated(ConveyorError):
    status = 401


class PermissionDenied(ConveyorError):
    status = 403


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through callers whose key has at least ``role``."""

    async def check(
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if settings.auth is AuthMode.OFF:
            return _DEVELOPER
        if credentials is None:
            raise Unauthenticated("UNAUTHENTICATED", "send an API key: Authorization: Bearer <key>")
        principal = await verify_key(session, key=credentials.credentials)
        if principal is None:
            raise Unauthenticated("UNAUTHENTICATED", "the API key is unknown or revoked")
        if principal.role < role:
            raise PermissionDenied(
                "PERMISSION_DENIED",
                f"this needs the {role.name} role; the key has {principal.role.name}",
                {"required_role": role.name, "role": principal.role.name},
            )
        request.state.principal = principal
        return principal

    return check


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
