"""``data_fetch``: read a list of items from a connector, page by page.

HTTP connectors page by number (``page`` / ``per_page`` until an empty page) or by cursor (the next cursor
from each body, sent back as a query parameter until there is none); SQL connectors run one select. The
output is ``{items, pages, truncated}``; the step's log line names the last URL asked (for HTTP). Credentials
come from the connector in the store and are masked wherever they show: in the output (a server echoing
them), the error, that log line and the worker's own log records.
"""

from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._retry import jittered_delay
from activities._secrets import with_secrets
from activities.database import DatabaseActivities, run_statement, statement_kind
from activities.http import _decode, _excerpt, _raise_for_status, send
from core.connectors import HttpConnectorConfig, Paging, SqlConnectorConfig
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import DataFetchConfig, parse_config


class FetchActivities:
    """``data_fetch`` over the worker's HTTP pool and the SQL engines of :class:`DatabaseActivities`."""

    def __init__(self, client: httpx.AsyncClient, database: DatabaseActivities, settings: Settings) -> None:
        self._client = client
        self._database = database
        self._settings = settings

    @activity.defn(name="data_fetch")
    async def data_fetch(self, request: StepRequest) -> StepOutcome:
        """Fetch every page the step asks for and return the items of all of them."""
        config = _config(with_secrets(request.config, self._settings.secrets))
        connector = await self._database.connectors.get(config.connector, request)
        metadata: dict[str, Any] = {"connector": connector.name}
        if isinstance(connector.config, SqlConnectorConfig):
            output = await self._from_sql(connector.name, connector.config, config, request)
        else:
            output, metadata["url"] = await self._from_http(connector.config, config, request)
        line = (
            f"fetched {len(output['items'])} item(s) in {output['pages']} page(s) "
            f"from connector {connector.name}"
        )
        return StepOutcome(
            output=output,
            attempt=activity.info().attempt,
            logs=[{"level": "info", "message": line, "metadata": metadata}],
        )

    async def _from_sql(
        self, name: str, connector: SqlConnectorConfig, config: DataFetchConfig, request: StepRequest
    ) -> dict[str, Any]:
        sql = config.sql if config.sql is not None else config.query
        if not isinstance(sql, str):
            raise _config_error(f"connector {name!r} is a SQL connector: give the select in 'query' or 'sql'")
        if statement_kind(sql, connector) != "read":
            raise ApplicationError(
                "data_fetch only reads; use a database_query step to write",
                type=errors.SQL_ERROR,
                non_retryable=True,
            )
        if not isinstance(config.params, dict):
            raise _config_error("with.params: expected an object")
        engine = await self._database.engines.get(name, connector)
        result = await run_statement(
            engine,
            connector,
            sql=sql,
            kind="read",
            params=config.params,
            params_each=None,
            max_rows=config.max_items,
            request=request,
        )
        return {"items": result["rows"], "pages": 1, "truncated": result["truncated"]}

    async def _from_http(
        self, connector: HttpConnectorConfig, config: DataFetchConfig, request: StepRequest
    ) -> tuple[dict[str, Any], str]:
        """The items of every page, and the URL of the last request (the one that ended the paging)."""
        if isinstance(config.query, str) or config.sql is not None:
            raise _config_error("this is an HTTP connector: 'query' is an object of query parameters")
        paging = _paging(connector.paging, config)
        url = _join(connector.base_url, config.path)
        headers = {**connector.headers, **config.headers}
        auth: httpx.BasicAuth | None = None
        if connector.auth is not None:
            if connector.auth.type == "bearer":
                headers["Authorization"] = f"Bearer {connector.auth.token}"
            elif connector.auth.type == "api_key":
                headers[connector.auth.header] = connector.auth.token or ""
            else:
                auth = httpx.BasicAuth(connector.auth.username or "", connector.auth.password or "")
        timeout = (
            float(config.timeout)
            if config.timeout is not None
            else connector.timeout or self._settings.http_timeout_s
        )
        items: list[Any] = []
        pages = 0
        page = paging.start_page if paging else 0
        cursor: Any = None
        max_pages = paging.max_pages if paging else 1
        truncated = False
        asked = url
        while pages < max_pages:
            query = dict(config.query or {})
            if paging is not None and paging.style == "page":
                query[paging.page_param] = page
                if paging.size_param:
                    query[paging.size_param] = paging.page_size
            elif paging is not None and cursor is not None:
                query[paging.cursor_param] = cursor
            body, asked = await self._request(config, url, query, headers, auth, timeout, request)
            pages += 1
            activity.heartbeat(pages)
            found = _items(body, config.items)
            if paging is not None and paging.style == "page" and not found:
                break
            items.extend(found)
            if len(items) > config.max_items:
                del items[config.max_items :]
                truncated = True
                break
            if paging is None:
                break
            if paging.style == "page":
                page += 1
                continue
            cursor = _lookup(body, paging.cursor_field)
            if cursor is None or cursor == "":
                break
        return {"items": items, "pages": pages, "truncated": truncated}, asked

    async def _request(
        self,
        config: DataFetchConfig,
        url: str,
        query: dict[str, Any],
        headers: dict[str, str],
        auth: httpx.BasicAuth | None,
        timeout_s: float,
        request: StepRequest,
    ) -> tuple[Any, str]:
        response, raw = await send(
            self._client,
            request,
            config.method,
            url,
            limit=self._settings.http_max_response_bytes,
            timeout_s=timeout_s,
            params=query or None,
            headers=headers,
            json=config.body,
            auth=auth,
        )
        body = _decode(response, raw)
        _raise_for_status(response, body, True, jittered_delay(request))
        return body, str(response.url)


def _paging(connector: Paging | None, config: DataFetchConfig) -> Paging | None:
    """The connector's paging with the step's overrides; None for a single request."""
    style = config.paging.style or (connector.style if connector else "none")
    if style == "none":
        return None
    base = connector if connector is not None and connector.style == style else Paging(style=style)
    overrides: dict[str, Any] = {}
    if connector is not None and connector.style != style:
        # A step switching style keeps the connector's limits.
        overrides["max_pages"] = connector.max_pages
    if config.paging.max_pages is not None:
        overrides["max_pages"] = config.paging.max_pages
    if config.paging.page_size is not None:
        overrides["page_size"] = config.paging.page_size
    return base.model_copy(update=overrides)


def _join(base_url: str, path: str) -> str:
    if "://" in path or path.startswith("//"):
        # The connector's credentials must only ever go to the connector's own host.
        raise _config_error("with.path is a path below the connector's base_url, not a URL")
    if not path:
        return base_url
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


def _lookup(body: Any, path: str) -> Any:
    """The value at dotted ``path`` (``data.items``, ``results.0.rows``) in ``body``, or None."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _items(body: Any, path: str | None) -> list[Any]:
    found = body if not path else _lookup(body, path)
    if isinstance(found, list):
        return found
    where = f"at {path!r}" if path else "as the body (set 'items' to the path of the list)"
    raise ApplicationError(
        f"the response has no list {where}",
        {"body": _excerpt(body)},
        type=errors.UNEXPECTED_RESPONSE,
        non_retryable=True,
    )


def _config(values: dict[str, Any]) -> DataFetchConfig:
    try:
        return parse_config(DataFetchConfig, values)
    except ValueError as exc:
        raise _config_error(str(exc)) from None


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.CONFIG_INVALID, non_retryable=True)
