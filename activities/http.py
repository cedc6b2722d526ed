"""``http_request`` (and its alias ``api_call``): one HTTP request, classified for Temporal's retries.

429 retries after the server's Retry-After; 5xx, timeouts and connection errors retry with backoff; other
4xx are the caller's fault and do not retry.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._retry import jittered_delay
from activities._secrets import with_secrets
from core.settings import Settings
from core.ssrf import refuse_literal, refuse_non_web
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import HttpRequestConfig, parse_config

_BODY_EXCERPT = 2_000
IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpActivities:
    """HTTP step activities sharing one connection pool."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    @activity.defn(name="http_request")
    async def http_request(self, request: StepRequest) -> StepOutcome:
        """Send the request the step describes and return ``{status, headers, body}``."""
        config = _config(with_secrets(request.config, self._settings.secrets))
        headers = dict(config.headers)
        auth: httpx.BasicAuth | None = None
        if config.auth is not None:
            if config.auth.type == "bearer":
                headers["Authorization"] = f"Bearer {config.auth.token}"
            elif config.auth.type == "api_key":
                headers[config.auth.header] = config.auth.token or ""
            else:
                auth = httpx.BasicAuth(config.auth.username or "", config.auth.password or "")
        timeout = float(config.timeout) if config.timeout is not None else self._settings.http_timeout_s
        info = activity.info()
        if config.idempotency_key and IDEMPOTENCY_HEADER.lower() not in {h.lower() for h in headers}:
            # The activity id tells apart runs of one step (loop items); retries of a run keep it.
            headers[IDEMPOTENCY_HEADER] = f"{request.execution_id}/{request.step_id}/{info.activity_id}"
        activity.logger.info("%s %s (attempt %d)", config.method, _redact_query(config.url), info.attempt)
        response, raw = await send(
            self._client,
            request,
            config.method,
            config.url,
            limit=self._settings.http_max_response_bytes,
            timeout_s=timeout,
            headers=headers,
            params=config.query or None,
            json=config.body if config.body is not None and config.form is None else None,
            data=config.form,
            auth=auth,
        )
        body = _decode(response, raw)
        _raise_for_status(response, body, config.raise_for_status, jittered_delay(request))
        output = {"status": response.status_code, "headers": dict(response.headers), "body": body}
        elapsed_ms = round(response.elapsed.total_seconds() * 1000, 1) if response.is_closed else None
        summary = {
            "level": "info",
            "message": f"{config.method} {_redact_query(config.url)} -> {response.status_code}",
            "metadata": {
                "method": config.method,
                "url": _redact_query(config.url),
                "status": response.status_code,
                "bytes": len(raw),
                "elapsed_ms": elapsed_ms,
            },
        }
        return StepOutcome(output=output, attempt=info.attempt, logs=[summary])


async def send(
    client: httpx.AsyncClient,
    request: StepRequest,
    method: str,
    url: str,
    *,
    limit: int,
    timeout_s: float,
    **options: Any,
) -> tuple[httpx.Response, bytes]:
    """One request with the body read up to ``limit`` bytes within ``timeout_s`` in all, its failures mapped
    to step error types. A refused address (``core.ssrf``) fails the step as ``OutboundBlocked``."""
    refuse_non_web(url)
    try:
        # httpx's timeout is per read: the overall deadline stops a server that drips bytes forever.
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, url, timeout=timeout_s, **options) as response:
                raw = await _read_capped(response, limit)
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ApplicationError(
            f"request timed out after {timeout_s:g}s",
            type=errors.HTTP_TIMEOUT,
            next_retry_delay=jittered_delay(request),
        ) from exc
    except httpx.TransportError as exc:
        raise ApplicationError(
            f"request failed: {exc}",
            type=errors.HTTP_TRANSPORT_ERROR,
            next_retry_delay=jittered_delay(request),
        ) from exc
    except httpx.InvalidURL as exc:
        refuse_literal(url)  # httpx rejects some spellings of private addresses (0177.0.0.1): say so
        raise ApplicationError(f"invalid url: {exc}", type=errors.CONFIG_INVALID, non_retryable=True) from exc
    return response, raw


def _config(values: dict[str, Any]) -> HttpRequestConfig:
    try:
        return parse_config(HttpRequestConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ApplicationError(
                f"response is larger than {limit} bytes", type=errors.RESPONSE_TOO_LARGE, non_retryable=True
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(response: httpx.Response, raw: bytes) -> Any:
    if not raw:
        return None
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw.decode(response.encoding or "utf-8", errors="replace")


def _raise_for_status(response: httpx.Response, body: Any, strict: bool, backoff: timedelta | None) -> None:
    status = response.status_code
    details = {"status": status, "body": _excerpt(body)}
    if status == 429:
        delay = _retry_after(response.headers.get("retry-after"))
        raise ApplicationError(
            f"rate limited (429){f', retry after {delay.total_seconds():g}s' if delay else ''}",
            details,
            type=errors.RATE_LIMITED,
            next_retry_delay=delay,
        )
    if status >= 500:
        raise ApplicationError(
            f"server error {status}", details, type=errors.HTTP_SERVER_ERROR, next_retry_delay=backoff
        )
    if status >= 400 and strict:
        raise ApplicationError(
            f"client error {status}", details, type=errors.HTTP_CLIENT_ERROR, non_retryable=True
        )


def _retry_after(value: str | None) -> timedelta | None:
    if not value:
        return None
    if value.strip().isdigit():
        return timedelta(seconds=int(value.strip()))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds = (when - activity.info().current_attempt_scheduled_time).total_seconds()
    return timedelta(seconds=max(seconds, 0))


def _excerpt(body: Any) -> Any:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return body if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "…"


def _redact_query(url: str) -> str:
    """Query strings often carry tokens; logs keep only scheme, host and path."""
    return url.split("?", 1)[0]
