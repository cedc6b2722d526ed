"""Connectors: named SQL databases and HTTP APIs that ``database_query`` and ``data_fetch`` steps use.

Credentials live only in the store, sealed: a row keeps the whole configuration encrypted
(``sealed_config``, ``core/sealing.py``) beside the configuration with every credential masked, which is
what the API shows. Definitions name a connector; the activity opens its configuration when the step runs
and masks its credentials (:func:`credentials`) in whatever the step returns, raises or logs.
Keyword-only data functions.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, NotFound, Unprocessable
from core.models import Connector, utcnow
from core.sealing import Sealer
from workflows.definition import json_path
from workflows.steps import HttpAuth

ConnectorType = Literal["sql", "http"]
MASK = "***"
SQL_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
CREDENTIAL_NAME = re.compile(
    r"auth|token|key|secret|passw|pwd|cookie|session|signature|credential", re.IGNORECASE
)
"""A name (header, query parameter, field) whose value is a credential."""
_AUTH_SECRETS = ("token", "password")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlConnectorConfig(_Config):
    """A SQL database: ``url`` is a SQLAlchemy async URL; statements that write need ``allow_writes``."""

    url: str
    allow_writes: bool = False

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        try:
            parsed = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL, e.g. postgresql+asyncpg://user:pass@host/db") from None
        if parsed.drivername not in SQL_DRIVERS:
            raise ValueError(
                f"driver {parsed.drivername!r} is not supported; use one of {', '.join(SQL_DRIVERS)}"
            )
        return value


class Paging(_Config):
    """How an HTTP API pages: ``page`` numbers (until an empty page) or a ``cursor`` from each body."""

    style: Literal["page", "cursor"]
    page_param: str = "page"
    size_param: str | None = "per_page"
    page_size: int = Field(default=100, ge=1)
    start_page: int = 1
    cursor_param: str = "cursor"
    cursor_field: str = "next_cursor"
    """Dotted path to the next cursor in each body; a missing or empty one ends the paging."""
    max_pages: int = Field(default=100, ge=1, le=1000)


class HttpConnectorConfig(_Config):
    """An HTTP API: requests go to ``base_url`` + the step's ``path`` with these credentials and headers."""

    base_url: str
    auth: HttpAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    paging: Paging | None = None
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        return value


CONFIG_MODELS: dict[str, type[SqlConnectorConfig] | type[HttpConnectorConfig]] = {
    "sql": SqlConnectorConfig,
    "http": HttpConnectorConfig,
}


def parse_config(connector_type: str, config: dict[str, Any]) -> SqlConnectorConfig | HttpConnectorConfig:
    """The configuration as its model; :class:`Unprocessable` lists each problem with its JSON path."""
    model = CONFIG_MODELS.get(connector_type)
    if model is None:
        raise Unprocessable(
            "CONNECTOR_INVALID",
            f"unknown connector type {connector_type!r}",
            {"problems": [{"path": "$.type", "message": "use 'sql' or 'http'"}]},
        )
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = [{"path": json_path(("config", *e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise Unprocessable(
            "CONNECTOR_INVALID", f"the connector has {len(problems)} problem(s)", {"problems": problems}
        ) from None


async def create_connector(
    session: AsyncSession, *, sealer: Sealer, name: str, type: ConnectorType, config: dict[str, Any]
) -> Connector:
    """Store a new connector, its configuration sealed; 409 when the name is taken."""
    model = parse_config(type, config)
    if await session.get(Connector, name) is not None:
        raise Conflict("CONNECTOR_EXISTS", f"a connector named {name!r} exists", {"name": name})
    now = utcnow()
    stored = _stored(sealer, name, type, model)
    row = Connector(name=name, type=type, created_at=now, updated_at=now, **stored)
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("CONNECTOR_EXISTS", f"a connector named {name!r} exists", {"name": name}) from None
    return row


async def replace_connector(
    session: AsyncSession, *, sealer: Sealer, name: str, type: ConnectorType, config: dict[str, Any]
) -> Connector:
    """Replace a connector's type and configuration (e.g. to rotate its credentials)."""
    model = parse_config(type, config)
    row = await get_connector(session, name=name)
    stored = _stored(sealer, name, type, model)
    row.type = type
    row.config = stored["config"]
    row.sealed_config = stored["sealed_config"]
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    return row


def _stored(
    sealer: Sealer, name: str, type: str, model: SqlConnectorConfig | HttpConnectorConfig
) -> dict[str, Any]:
    config = model.model_dump()
    return {"config": masked_config(type, config), "sealed_config": seal_config(sealer, name, config)}


def seal_config(sealer: Sealer, name: str, config: dict[str, Any]) -> str:
    """Connector ``name``'s whole configuration as the sealed text its row keeps."""
    return sealer.seal(json.dumps(config, separators=(",", ":")), context=sealing_context(name))


def open_config(sealer: Sealer, row: Connector) -> dict[str, Any]:
    """A row's whole configuration, credentials included; raises ``SealedValueUnreadable``."""
    config: dict[str, Any] = json.loads(sealer.open(row.sealed_config, context=sealing_context(row.name)))
    return config


def sealing_context(name: str) -> str:
    """What a connector's sealed configuration is bound to: its name (a row copied onto another fails)."""
    return f"connector:{name}"


async def list_connectors(session: AsyncSession) -> list[Connector]:
    """Every connector, by name."""
    return list((await session.exec(select(Connector).order_by(col(Connector.name)))).all())


async def get_connector(session: AsyncSession, *, name: str) -> Connector:
    """The connector called ``name``."""
    row = await session.get(Connector, name)
    if row is None:
        raise NotFound("CONNECTOR_NOT_FOUND", f"no connector named {name!r}", {"name": name})
    return row


async def delete_connector(session: AsyncSession, *, name: str) -> Connector:
    """Remove a connector; steps that name it fail with ``ConnectorNotFound`` from now on."""
    row = await get_connector(session, name=name)
    await session.delete(row)
    await session.commit()
    return row


def masked_config(connector_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every credential replaced by ``***``: URL passwords, tokens, sensitive headers."""
    shown = dict(config)
    if connector_type == "sql" and isinstance(shown.get("url"), str):
        shown["url"] = mask_url(shown["url"])
    if connector_type == "http":
        if isinstance(shown.get("base_url"), str):
            shown["base_url"] = mask_url(shown["base_url"])
        auth = shown.get("auth")
        if isinstance(auth, dict):
            shown["auth"] = {
                k: (MASK if k in _AUTH_SECRETS and v is not None else v) for k, v in auth.items()
            }
        headers = shown.get("headers")
        if isinstance(headers, dict):
            shown["headers"] = {k: (MASK if CREDENTIAL_NAME.search(k) else v) for k, v in headers.items()}
    return shown


def mask_url(url: str) -> str:
    """``url`` with its password and sensitive query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    scheme = f"{parts.scheme}:" if parts.scheme else ""
    # Put back the "//" of an empty authority, which urlunsplit drops: sqlite:////abs/path.db has one.
    authority = f"//{netloc}" if netloc or url[len(scheme) :].startswith("//") else ""
    shown = f"{scheme}{authority}{parts.path}"
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        shown += "?" + urlencode([(k, MASK if CREDENTIAL_NAME.search(k) else v) for k, v in pairs], safe="*")
    return f"{shown}#{parts.fragment}" if parts.fragment else shown


def credentials(config: SqlConnectorConfig | HttpConnectorConfig) -> list[str]:
    """Every credential ``config`` holds — what :func:`masked_config` hides — in each form a step sends it
    (a URL's password as written and decoded, basic auth as its base64), for masking step results and logs."""
    found: list[str] = []
    if isinstance(config, SqlConnectorConfig):
        found += _url_credentials(config.url)
        password = make_url(config.url).password
        found += [str(password)] if password else []
        return found
    found += _url_credentials(config.base_url)
    found += [value for header, value in config.headers.items() if CREDENTIAL_NAME.search(header)]
    auth = config.auth
    if auth is not None:
        found += [value for value in (auth.token, auth.password) if value]
        if auth.type == "basic":
            # What httpx sends in ``Authorization: Basic``, which an echoing server hands back.
            pair = f"{auth.username or ''}:{auth.password or ''}".encode()
            found.append(base64.b64encode(pair).decode())
    return found


def _url_credentials(url: str) -> list[str]:
    """A URL's password and sensitive query values, as written and percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if value and CREDENTIAL_NAME.search(unquote(key)):
            found.append(value)
    return [form for value in found for form in {value, unquote(value), unquote_plus(value)}]
