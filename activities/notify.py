"""``notification``: tell a person or a system that something happened (log and webhook channels)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._retry import jittered_delay
from activities._secrets import with_secrets
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import NotificationConfig, parse_config

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class NotificationActivities:
    """Notification channels sharing the worker's HTTP pool."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    @activity.defn(name="notification")
    async def notification(self, request: StepRequest) -> StepOutcome:
        """Deliver the message; the output says where it went."""
        config = _config(request.config)
        attempt = activity.info().attempt
        if config.channel == "log":
            # The text goes to the log and, as the output, to history: secrets stay placeholders there.
            activity.logger.log(_LEVELS[config.level], "[%s] %s", request.step_id, config.message)
            return StepOutcome(output={"channel": "log", "message": config.message}, attempt=attempt)
        config = _config(with_secrets(request.config, self._settings.secrets))
        payload: Any = config.payload if config.payload is not None else {"message": config.message}
        try:
            response = await self._client.post(
                config.url or "", json=payload, headers=config.headers, timeout=self._settings.http_timeout_s
            )
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"webhook failed: {exc}",
                type=errors.HTTP_TRANSPORT_ERROR,
                next_retry_delay=jittered_delay(request),
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ApplicationError(
                f"webhook answered {response.status_code}",
                type=errors.HTTP_SERVER_ERROR,
                next_retry_delay=jittered_delay(request),
            )
        if response.status_code >= 400:
            raise ApplicationError(
                f"webhook answered {response.status_code}", type=errors.HTTP_CLIENT_ERROR, non_retryable=True
            )
        return StepOutcome(output={"channel": "webhook", "status": response.status_code}, attempt=attempt)


def _config(values: dict[str, Any]) -> NotificationConfig:
    try:
        return parse_config(NotificationConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
