"""Side effects of entity workflows: SLA record writes and the automation rules run on domain events.

Both activities are safe to retry. An SLA record is an upsert on its id. Automation actions that create or
start something use ids derived from the event and the rule (a retry finds what the first attempt made),
transitions carry a request id derived the same way; alerts and webhooks are delivered at least once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.http import send
from activities.notify import NotificationActivities
from core import names
from core.automations import evaluate, event_context, rules_for
from core.entities import InvalidTransition, PermissionDenied, create_entity, transition_entity
from core.entity_metrics import SLA_BREACHES
from core.errors import ConveyorError
from core.executions import start_execution
from core.settings import Settings
from core.sla import write_sla_record
from workflows import errors, expressions
from workflows.entity_messages import EntityEvent, SlaRecordWrite, TransitionRequest
from workflows.lifecycles import ADMIN_ROLE, Actor, AutomationAction, AutomationRule
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import EntityConfig, parse_config

log = logging.getLogger("conveyor.automations")


class EntityActivities:
    """Entity side effects, with the store, the Temporal client and the worker's HTTP pool."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        http: httpx.AsyncClient,
        settings: Settings,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._http = http
        self._settings = settings
        self._notify = NotificationActivities(http, settings)

    @activity.defn(name=names.ACTIVITY_ENTITY_SLA)
    async def entity_sla_record(self, write: SlaRecordWrite) -> bool:
        """Upsert the SLA record; True when this write recorded a breach (counted once)."""
        async with self._sessions() as session:
            newly_breached = await write_sla_record(session, write)
        if newly_breached:
            SLA_BREACHES.inc()
        return newly_breached

    @activity.defn(name=names.ACTIVITY_ENTITY_EVENT)
    async def entity_event(self, event: EntityEvent) -> dict[str, Any]:
        """Evaluate every rule listening to the event and run the actions of those that match."""
        context = event_context(event)
        async with self._sessions() as session:
            rules = await rules_for(session, event)
        report: dict[str, Any] = {"event_id": event.event_id, "matched": [], "results": []}
        for rule in rules:
            if not evaluate(rule, context):
                continue
            report["matched"].append(rule.id)
            for index, action in enumerate(rule.actions):
                result = await self._run(rule, index, action, event, context)
                report["results"].append({"rule": rule.id, "action": action.type, **result})
        return report

    async def _run(
        self,
        rule: AutomationRule,
        index: int,
        action: AutomationAction,
        event: EntityEvent,
        context: dict[str, Any],
    ) -> dict[str, Any]:
        try:
            params = expressions.render(action.params, context)
        except expressions.ExpressionError as exc:
            log.warning("automation %s: %s", rule.id, exc)
            return {"error": str(exc)}
        # Stable across retries of this activity, distinct per event, rule and action.
        key = f"{event.event_id}|{rule.id}|{index}"
        actor = Actor.of_role(f"automation:{rule.id}", ADMIN_ROLE)
        try:
            if action.type == "create_entity":
                return await self._create(params, event, rule, index, actor)
            if action.type == "transition_entity":
                result = await transition_entity(
                    self._client,
                    entity_type=str(params["entity_type"]),
                    entity_id=str(params["entity_id"]),
                    request=TransitionRequest(
                        target_state=str(params["target_state"]),
                        actor=actor.name,
                        role=actor.role,
                        permissions=list(actor.permissions),
                        notes=str(params.get("notes") or f"automation {rule.id}"),
                        context={"event_id": event.event_id},
                        request_id=_digest(key),
                    ),
                )
                return {"entity_id": result.entity.id, "state": result.entity.state}
            if action.type == "emit_alert":
                outcome = await self._notify.notification(
                    StepRequest(
                        execution_id=activity.info().workflow_id or event.entity_id,
                        step_id=f"automation:{rule.id}",
                        config=params,
                    )
                )
                return {"alert": outcome.output}
            if action.type == "call_webhook":
                return await self._webhook(params, event)
            if action.type == "start_definition":
                async with self._sessions() as session:
                    started = await start_execution(
                        session,
                        self._client,
                        task_queue=activity.info().task_queue,
                        name=str(params["definition"]),
                        input=params.get("input") or {"event": context["event"]},
                        caller_id=f"auto-{_digest(key)}",
                        trigger="automation",
                        actor=actor.name,
                    )
                return {"execution_id": started.execution_id}
        except (InvalidTransition, PermissionDenied) as exc:
            log.warning("automation %s: %s", rule.id, exc.message)
            return {"error": exc.error_code, "message": exc.message}
        except ConveyorError as exc:
            if exc.status >= 500:
                raise ApplicationError(exc.message, type=exc.error_code) from exc
            log.warning("automation %s: %s", rule.id, exc.message)
            return {"error": exc.error_code, "message": exc.message}
        raise ApplicationError(
            f"unknown action {action.type}", type=errors.CONFIG_INVALID, non_retryable=True
        )

    async def _create(
        self, params: dict[str, Any], event: EntityEvent, rule: AutomationRule, index: int, actor: Actor
    ) -> dict[str, Any]:
        event_part = event.event_id.rsplit(":", 1)[-1]
        entity_id = str(params.get("id") or f"{event.entity_id}.{rule.id}.{event_part}")
        if index:
            entity_id += f".{index}"
        fields = {k: v for k, v in dict(params.get("fields") or {}).items() if v is not None}
        async with self._sessions() as session:
            created = await create_entity(
                session,
                self._client,
                task_queue=activity.info().task_queue,
                entity_type=str(params["entity_type"]),
                data=fields,
                actor=actor,
                entity_id=entity_id,
            )
        return {"entity_id": created.entity.id, "created": created.created}

    async def _webhook(self, params: dict[str, Any], event: EntityEvent) -> dict[str, Any]:
        payload = params.get("payload") or event_context(event)["event"]
        # The steps' own sender: the outbound guard, a size cap and an overall deadline, errors mapped.
        response, _ = await send(
            self._http,
            StepRequest(execution_id=event.entity_id, step_id="automation", config={}),
            "POST",
            str(params["url"]),
            limit=self._settings.http_max_response_bytes,
            timeout_s=self._settings.http_timeout_s,
            json=payload,
            headers=dict(params.get("headers") or {}),
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise ApplicationError(f"webhook answered {response.status_code}", type=errors.HTTP_SERVER_ERROR)
        return {"status": response.status_code}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class EntityStepActivities:
    """The ``entity`` step: create or transition an entity from a definition."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: Client) -> None:
        self._sessions = sessions
        self._client = client

    @activity.defn(name="entity")
    async def entity(self, request: StepRequest) -> StepOutcome:
        """Create or transition; a refused transition fails the step (non-retryable) with its error code.

        The step acts as an admin named after its execution: definitions are published by admins. Ids are
        derived from the execution and the activity, so a retried step finds the entity or the transition
        it made.
        """
        try:
            config = parse_config(EntityConfig, request.config)
        except ValueError as exc:
            raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
        info = activity.info()
        key = _digest(f"{info.workflow_id}:{info.workflow_run_id}:{info.activity_id}")
        actor = Actor.of_role(f"execution:{request.execution_id}", ADMIN_ROLE)
        try:
            if config.action == "create":
                async with self._sessions() as session:
                    created = await create_entity(
                        session,
                        self._client,
                        task_queue=info.task_queue,
                        entity_type=config.entity_type,
                        data=config.fields,
                        actor=actor,
                        entity_id=config.id or f"step-{key}",
                    )
                output = {**asdict(created.entity), "created": created.created}
            else:
                result = await transition_entity(
                    self._client,
                    entity_type=config.entity_type,
                    entity_id=str(config.id),
                    request=TransitionRequest(
                        target_state=str(config.target_state),
                        actor=actor.name,
                        role=actor.role,
                        permissions=list(actor.permissions),
                        notes=config.notes,
                        context=config.context,
                        request_id=key,
                    ),
                )
                output = {**asdict(result.entity), "transition": asdict(result.transition)}
        except ConveyorError as exc:
            raise ApplicationError(
                exc.message, exc.details, type=exc.error_code, non_retryable=exc.status < 500
            ) from None
        return StepOutcome(output=output, attempt=info.attempt)
