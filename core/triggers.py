"""Triggers: the store of webhook and schedule triggers, secret rotation, and webhook deliveries.

Webhook secrets are kept sealed (``core/sealing.py``), bound to their trigger, with the hint the API shows
beside them; a delivery opens them to verify its signature.

A webhook delivery starts at most one execution: its delivery id is part of the workflow id (so Temporal and
the ``executions`` record dedupe it) and a ``deliveries`` row maps it to that execution for
``webhook_dedupe_ttl_s``, so a redelivery is answered from SQL without touching Temporal.
"""

from __future__ import annotations

import hashlib
import re
import secrets as random_secrets
import time
import uuid
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from core import schedules
from core.definitions import get_definition, runnable_version
from core.errors import BadRequest, Conflict, NotFound, Unprocessable
from core.executions import start_execution
from core.models import Delivery, Trigger, utcnow
from core.sealing import Sealer
from core.settings import Settings
from core.signatures import HmacOptions, Scheme, standard_key, verify
from core.untrusted import InputRefused, parse_json
from workflows.expressions import ExpressionError, check_template, render, templates_in

TriggerType = Literal["webhook", "schedule", "event"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_MAPPING_ROOTS = frozenset({"body", "headers", "query"})


class WebhookConfig(BaseModel):
    """A webhook trigger's ``config`` (its secret is kept apart and never shown again)."""

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme = Field(description="github | stripe | standard | hmac | none (none must be chosen)")
    tolerance_s: int = Field(default=300, ge=1, le=86_400, description="accepted clock skew of timestamps")
    id_header: str | None = Field(default=None, description="header holding the sender's delivery id")
    input_mapping: dict[str, Any] | None = Field(
        default=None, description="input key -> template over body, headers, query; default: the body"
    )
    secret_overlap_s: int | None = Field(
        default=None, ge=0, description="how long a rotated-out secret stays valid (default from settings)"
    )
    header: str = Field(default="X-Signature", description="hmac: the signature header")
    algorithm: Literal["sha256", "sha512", "sha1"] = Field(default="sha256", description="hmac: digest")
    encoding: Literal["hex", "base64"] = Field(default="hex", description="hmac: signature encoding")
    prefix: str = Field(
        default="", max_length=32, description="hmac: text before the signature, e.g. sha256="
    )
    timestamp_header: str | None = Field(
        default=None, description="hmac: header with Unix seconds; signed content is '{timestamp}.{body}'"
    )

    @field_validator("id_header", "header", "timestamp_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError("not an HTTP header name")
        return value

    @field_validator("input_mapping")
    @classmethod
    def _templates(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        problems = [
            f"{path}: {problem}"
            for path, source in templates_in(value, "input_mapping")
            for problem in check_template(source, frozenset(), _MAPPING_ROOTS)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def hmac_options(self) -> HmacOptions:
        return HmacOptions(
            header=self.header,
            algorithm=self.algorithm,
            encoding=self.encoding,
            prefix=self.prefix,
            timestamp_header=self.timestamp_header,
        )


class EventConfig(BaseModel):
    """An event trigger's ``config``; stored here, acted on by the event machinery."""

    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1, max_length=200)


# -- the store ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """A new trigger, and its secret when Conveyor generated one (shown this once)."""

    trigger: Trigger
    secret: str | None


def new_secret(scheme: Scheme) -> str:
    """A fresh random secret in the form ``scheme`` expects."""
    if scheme is Scheme.STANDARD:
        return "whsec_" + b64encode(random_secrets.token_bytes(24)).decode()
    return random_secrets.token_urlsafe(32)


def _check_secret(scheme: Scheme, secret: str) -> None:
    if len(secret) < 8 or len(secret) > 512:
        raise Unprocessable("SECRET_INVALID", "a secret has 8 to 512 characters", {"field": "secret"})
    if scheme is Scheme.STANDARD:
        try:
            standard_key(secret)
        except ValueError as exc:
            raise Unprocessable("SECRET_INVALID", str(exc), {"field": "secret"}) from None


def _validated(model: type[BaseModel], config: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = [
            {"path": "$.config" + "".join(f".{p}" for p in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        raise Unprocessable(
            "TRIGGER_INVALID", "the trigger config is not valid", {"problems": problems}
        ) from None


def secret_entry(
    sealer: Sealer, trigger_id: str, value: str, created_at: str | None = None, expires_at: str | None = None
) -> dict[str, Any]:
    """One entry of ``Trigger.secrets``: the secret sealed for this trigger, and the hint the API shows."""
    return {
        "value": sealer.seal(value, context=sealing_context(trigger_id)),
        "hint": "…" + value[-4:] if len(value) >= 16 else "…",
        "created_at": created_at or utcnow().isoformat(),
        "expires_at": expires_at,
    }


def sealing_context(trigger_id: str) -> str:
    """What a trigger's sealed secrets are bound to: its id (a value copied onto another trigger fails)."""
    return f"trigger:{trigger_id}"


async def create_trigger(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    *,
    sealer: Sealer,
    definition: str,
    type: TriggerType,
    config: dict[str, Any],
) -> Created:
    """Store a trigger; a schedule trigger's Temporal schedule is created before the row is committed."""
    await get_definition(session, name=definition)
    trigger_id = uuid.uuid4().hex[:16]
    config = dict(config)
    secret: str | None = None
    generated: str | None = None
    paused = False
    if type == "webhook":
        secret = config.pop("secret", None)
        webhook = _validated(WebhookConfig, config)
        assert isinstance(webhook, WebhookConfig)
        if webhook.scheme is not Scheme.NONE:
            if secret is None:
                secret = generated = new_secret(webhook.scheme)
            if not isinstance(secret, str):
                raise Unprocessable("SECRET_INVALID", "secret is text", {"field": "secret"})
            _check_secret(webhook.scheme, secret)
        elif secret is not None:
            raise Unprocessable("SECRET_INVALID", "scheme none takes no secret", {"field": "secret"})
        stored = webhook.model_dump(mode="json", exclude_none=True)
    elif type == "schedule":
        schedule = _validated(schedules.ScheduleConfig, config)
        assert isinstance(schedule, schedules.ScheduleConfig)
        paused = schedule.paused
        stored = schedule.model_dump(mode="json", exclude_none=True)
    else:
        stored = _validated(EventConfig, config).model_dump(mode="json")
    trigger = Trigger(
        id=trigger_id,
        definition=definition,
        type=type,
        config=stored,
        secrets=[secret_entry(sealer, trigger_id, secret)] if secret else [],
        paused=paused,
    )
    session.add(trigger)
    if type == "schedule":
        version = await runnable_version(session, name=definition)
        await session.flush()
        await schedules.create_schedule(
            client,
            trigger_id=trigger_id,
            version=version,
            config=schedules.ScheduleConfig.model_validate(stored),
            paused=paused,
            task_queue=settings.task_queue,
        )
    await session.commit()
    return Created(trigger, generated)


async def get_trigger(session: AsyncSession, *, trigger_id: str) -> Trigger:
    """The trigger ``trigger_id``."""
    trigger = await session.get(Trigger, trigger_id) if len(trigger_id) <= 32 else None
    if trigger is None:
        raise NotFound("TRIGGER_NOT_FOUND", f"no trigger {trigger_id!r}", {"trigger_id": trigger_id})
    return trigger


async def list_triggers(session: AsyncSession, *, definition: str | None = None) -> list[Trigger]:
    """Triggers, oldest first, of one definition or all."""
    query = select(Trigger).order_by(col(Trigger.created_at), col(Trigger.id))
    if definition is not None:
        query = query.where(Trigger.definition == definition)
    return list((await session.exec(query)).all())


def active_secrets(trigger: Trigger, sealer: Sealer, now: datetime | None = None) -> list[str]:
    """The secrets a delivery may be signed with now: the current one and, during a rotation, the old one."""
    moment = now or utcnow()
    return [
        sealer.open(entry["value"], context=sealing_context(trigger.id))
        for entry in trigger.secrets
        if entry.get("expires_at") is None or datetime.fromisoformat(entry["expires_at"]) > moment
    ]


def masked_secrets(trigger: Trigger) -> list[dict[str, Any]]:
    """The secrets as the API shows them: a hint of the last characters, never the value."""
    now = utcnow()
    shown = []
    for entry in trigger.secrets:
        expires = entry.get("expires_at")
        shown.append(
            {
                "hint": entry.get("hint", "…"),
                "created_at": entry.get("created_at"),
                "expires_at": expires,
                "active": expires is None or datetime.fromisoformat(expires) > now,
            }
        )
    return shown


async def update_trigger(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    *,
    sealer: Sealer,
    trigger_id: str,
    config: dict[str, Any] | None = None,
    secret: str | None = None,
    retire_old_secret: bool = False,
) -> Trigger:
    """Change a trigger's config (merged key by key; ``null`` removes a key) and rotate its secret.

    A new ``secret`` becomes current and the previous one stays valid for the overlap (the trigger's
    ``secret_overlap_s``, else ``webhook_secret_overlap_s``) or until ``retire_old_secret``.
    """
    trigger = await get_trigger(session, trigger_id=trigger_id)
    if config:
        merged = {**trigger.config}
        for key, value in config.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if "secret" in merged:
            raise Unprocessable("SECRET_INVALID", "rotate a secret with the top-level 'secret' field")
        if trigger.type == "webhook":
            webhook = _validated(WebhookConfig, merged)
            assert isinstance(webhook, WebhookConfig)
            if (webhook.scheme is Scheme.NONE) != (not trigger.secrets):
                raise Conflict(
                    "SCHEME_CHANGE",
                    "changing to or from scheme none needs a new trigger",
                    {"field": "scheme"},
                )
            if webhook.scheme is Scheme.STANDARD:
                for value in active_secrets(trigger, sealer):
                    _check_secret(webhook.scheme, value)
            trigger.config = webhook.model_dump(mode="json", exclude_none=True)
        elif trigger.type == "schedule":
            schedule = _validated(schedules.ScheduleConfig, merged)
            assert isinstance(schedule, schedules.ScheduleConfig)
            trigger.config = schedule.model_dump(mode="json", exclude_none=True)
            trigger.paused = schedule.paused if "paused" in config else trigger.paused
            await schedules.replace_schedule(
                client,
                trigger_id=trigger.id,
                version=await runnable_version(session, name=trigger.definition),
                config=schedule,
                paused=trigger.paused,
                task_queue=settings.task_queue,
            )
        else:
            trigger.config = _validated(EventConfig, merged).model_dump(mode="json")
    if secret is not None or retire_old_secret:
        if trigger.type != "webhook" or not trigger.secrets:
            raise Conflict("NO_SECRET", "only signed webhook triggers have secrets", {"field": "secret"})
        scheme = Scheme(trigger.config["scheme"])
        entries = list(trigger.secrets)
        if secret is not None:
            _check_secret(scheme, secret)
            overlap = trigger.config.get("secret_overlap_s", settings.webhook_secret_overlap_s)
            previous = {**entries[0], "expires_at": (utcnow() + timedelta(seconds=overlap)).isoformat()}
            entries = [secret_entry(sealer, trigger.id, secret), previous]
        if retire_old_secret:
            entries = entries[:1]
        trigger.secrets = entries
    trigger.updated_at = utcnow()
    session.add(trigger)
    await session.commit()
    return trigger


async def set_paused(session: AsyncSession, client: Client, *, trigger_id: str, paused: bool) -> Trigger:
    """Pause or resume: a paused webhook answers 404, a paused schedule does not fire."""
    trigger = await get_trigger(session, trigger_id=trigger_id)
    if trigger.type == "schedule":
        await schedules.set_paused(
            client,
            trigger_id=trigger.id,
            paused=paused,
            note="paused through the API" if paused else "resumed",
        )
    trigger.paused = paused
    trigger.updated_at = utcnow()
    session.add(trigger)
    await session.commit()
    return trigger


async def delete_trigger(session: AsyncSession, client: Client, *, trigger_id: str) -> None:
    """Delete a trigger, its Temporal schedule and its delivery records."""
    trigger = await get_trigger(session, trigger_id=trigger_id)
    if trigger.type == "schedule":
        await schedules.delete_schedule(client, trigger_id=trigger.id)
    await session.exec(delete(Delivery).where(col(Delivery.trigger_id) == trigger.id))
    await session.delete(trigger)
    await session.commit()


# -- webhook deliveries ------------------------------------------------------------------------------------


class BodyInvalid(BadRequest):
    """The body is signed but not what it claims to be (e.g. malformed JSON)."""


@dataclass(frozen=True)
class Accepted:
    """The answer to a delivery: its execution, and whether this delivery started it."""

    execution_id: str
    delivery_id: str
    created: bool


_PURGE_EVERY_S = 60.0
_next_purge = 0.0


def parse_body(body: bytes, content_type: str) -> Any:
    """The body as data: JSON, a form (GitHub's ``payload=`` form holds JSON), or text."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BodyInvalid("BODY_INVALID", f"the form body cannot be read: {exc}") from None
        fields: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in form.items()}
        if set(fields) == {"payload"} and isinstance(fields["payload"], str):
            return _json(fields["payload"].encode(), strict=True)
        return fields
    if not body:
        return None
    return _json(body, strict=kind == "application/json" or kind.endswith("+json"))


def _json(body: bytes, *, strict: bool) -> Any:
    try:
        return parse_json(body)
    except InputRefused as exc:
        if strict:
            raise BodyInvalid("BODY_INVALID", exc.message, exc.details) from None
        return body.decode("utf-8", "replace")


def delivery_id_of(
    scheme: Scheme, headers: Mapping[str, str], body: bytes, parsed: Any, id_header: str | None
) -> str:
    """The sender's id of this delivery, usable in a workflow id; a hash of the body when there is none."""
    raw: str | None = headers.get(id_header.lower()) if id_header else None
    if raw is None and scheme is Scheme.GITHUB:
        raw = headers.get("x-github-delivery")
    if raw is None and scheme is Scheme.STANDARD:
        raw = headers.get("webhook-id")
    if raw is None and scheme is Scheme.STRIPE and isinstance(parsed, dict):
        event_id = parsed.get("id")
        raw = event_id if isinstance(event_id, str) else None
    if raw is None:
        raw = headers.get("idempotency-key")
    if raw is None or not raw.strip():
        return "body-" + hashlib.sha256(body).hexdigest()
    raw = raw.strip()
    if _SAFE_ID.match(raw):
        return raw
    return "id-" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def map_input(
    config: WebhookConfig, parsed: Any, headers: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    """The execution input: the mapping rendered over ``body``/``headers``/``query``, else the body itself."""
    if config.input_mapping is None:
        return parsed if isinstance(parsed, dict) else {"body": parsed}
    context = {"body": parsed, "headers": dict(headers), "query": dict(query)}
    try:
        mapped = render(config.input_mapping, context)
    except ExpressionError as exc:
        raise Unprocessable(
            "INPUT_MAPPING_FAILED",
            f"the input mapping failed on this delivery: {exc}",
            {"field": "input_mapping"},
        ) from None
    return mapped if isinstance(mapped, dict) else {"value": mapped}


async def webhook_trigger(session: AsyncSession, *, trigger_id: str) -> tuple[Trigger, WebhookConfig]:
    """The active webhook trigger behind ``/hooks/{trigger_id}``; unknown, paused or not a webhook: 404."""
    trigger = await session.get(Trigger, trigger_id) if len(trigger_id) <= 32 else None
    if trigger is None or trigger.type != "webhook" or trigger.paused:
        raise NotFound("TRIGGER_NOT_FOUND", "no active webhook trigger here", {"trigger_id": trigger_id})
    return trigger, WebhookConfig.model_validate(trigger.config)


async def accept_delivery(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    *,
    sealer: Sealer,
    trigger: Trigger,
    config: WebhookConfig,
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> Accepted:
    """Verify, dedupe and start: one execution per delivery id, whoever asks and however often."""
    # Plain values: a rollback on a concurrent duplicate expires ORM objects of this session.
    trigger_id, definition, secrets = trigger.id, trigger.definition, active_secrets(trigger, sealer)
    lowered = {key.lower(): value for key, value in headers.items()}
    verify(
        config.scheme,
        body=body,
        headers=lowered,
        secrets=secrets,
        tolerance_s=config.tolerance_s,
        hmac_options=config.hmac_options(),
    )
    parsed = parse_body(body, lowered.get("content-type", ""))
    delivery_id = delivery_id_of(config.scheme, lowered, body, parsed, config.id_header)
    await _purge_expired(session)
    now = utcnow()
    started = await start_execution(
        session,
        client,
        task_queue=settings.task_queue,
        name=definition,
        input=map_input(config, parsed, lowered, query),
        caller_id=f"hook-{trigger_id}-{delivery_id}",
        trigger="webhook",
        actor=f"webhook:{trigger_id}",
        record_also=[
            Delivery(
                trigger_id=trigger_id,
                delivery_id=delivery_id,
                execution_id=f"{definition}/hook-{trigger_id}-{delivery_id}",
                created_at=now,
                expires_at=now + timedelta(seconds=settings.webhook_dedupe_ttl_s),
            )
        ],
    )
    return Accepted(started.execution_id, delivery_id, created=started.created)


async def _purge_expired(session: AsyncSession) -> None:
    """Delete expired delivery records, at most once a minute per process."""
    global _next_purge
    if time.monotonic() < _next_purge:
        return
    _next_purge = time.monotonic() + _PURGE_EVERY_S
    await session.exec(delete(Delivery).where(col(Delivery.expires_at) <= utcnow()))
    await session.commit()


def _aware(moment: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive (in UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)
