"""``notification``: tell a person or a system that something happened.

Channels: ``log``, ``webhook`` (POST JSON), ``email`` (SMTP, configured by the ``CONVEYOR_SMTP_*``
settings) and ``slack`` (an incoming-webhook URL, posted ``{"text": message}``).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._retry import jittered_delay
from activities._secrets import with_secrets
from activities.http import send
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
        """Deliver the message; the output says where it went (never a secret or a webhook URL)."""
        shown = _config(request.config)
        attempt = activity.info().attempt
        if shown.channel == "log":
            # The text goes to the log and, as the output, to history: secrets stay placeholders there.
            activity.logger.log(_LEVELS[shown.level], "[%s] %s", request.step_id, shown.message)
            return StepOutcome(
                output={"channel": "log", "message": shown.message},
                attempt=attempt,
                logs=[{"level": shown.level, "message": shown.message or ""}],
            )
        config = _config(with_secrets(request.config, self._settings.secrets))
        if config.channel == "email":
            output = await self._email(config, shown, request)
        elif config.channel == "slack":
            payload = config.payload if config.payload is not None else {"text": config.message}
            status = await self._post(
                config.webhook_url or config.url or "", payload, config.headers, request
            )
            output = {"channel": "slack", "status": status}
        else:
            payload = config.payload if config.payload is not None else {"message": config.message}
            status = await self._post(config.url or "", payload, config.headers, request)
            output = {"channel": "webhook", "status": status}
        return StepOutcome(output=output, attempt=attempt)

    async def _post(self, url: str, payload: Any, headers: dict[str, str], request: StepRequest) -> int:
        # Through the shared ``send``: the outbound guard, the size cap and the overall deadline apply too.
        response, _body = await send(
            self._client,
            request,
            "POST",
            url,
            limit=self._settings.http_max_response_bytes,
            timeout_s=self._settings.http_timeout_s,
            json=payload,
            headers=headers,
        )
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
        return response.status_code

    async def _email(
        self, config: NotificationConfig, shown: NotificationConfig, request: StepRequest
    ) -> dict[str, Any]:
        settings = self._settings
        if not settings.smtp_host:
            raise ApplicationError(
                "the email channel needs an SMTP server: set CONVEYOR_SMTP_HOST (and _PORT, _FROM, ...)",
                type=errors.CONFIG_INVALID,
                non_retryable=True,
            )
        recipients = _addresses(config.to)
        subject = config.subject or f"Conveyor: {request.step_id}"
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=settings.smtp_from.rsplit("@", 1)[-1] or None)
        message.set_content(config.message or "")
        try:
            refused = await asyncio.to_thread(self._send, message, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ApplicationError(
                f"the SMTP server refused every recipient: {sorted(exc.recipients)}",
                type=errors.EMAIL_REJECTED,
                non_retryable=True,
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else exc.smtp_error
            )
            if exc.smtp_code >= 500:
                raise ApplicationError(
                    f"the SMTP server rejected the message: {exc.smtp_code} {text}",
                    type=errors.EMAIL_REJECTED,
                    non_retryable=True,
                ) from None
            raise ApplicationError(
                f"the SMTP server answered {exc.smtp_code} {text}",
                type=errors.SMTP_ERROR,
                next_retry_delay=jittered_delay(request),
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ApplicationError(
                f"sending email failed: {type(exc).__name__}: {exc}",
                type=errors.SMTP_ERROR,
                next_retry_delay=jittered_delay(request),
            ) from None
        return {
            "channel": "email",
            "to": _addresses(shown.to),
            "subject": shown.subject or subject,
            "message_id": message["Message-ID"],
            "refused": sorted(refused),
        }

    def _send(self, message: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        settings = self._settings
        with smtplib.SMTP(
            settings.smtp_host or "", settings.smtp_port, timeout=settings.http_timeout_s
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            refused: dict[str, Any] = smtp.send_message(message, to_addrs=recipients)
            return refused


def _addresses(value: list[str] | str | None) -> list[str]:
    items = value if isinstance(value, list) else (value or "").split(",")
    return [item.strip() for item in items if item.strip()]


def _config(values: dict[str, Any]) -> NotificationConfig:
    try:
        return parse_config(NotificationConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
