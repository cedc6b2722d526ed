"""Automation rules: the lifecycles' own and those defined through the API, and their evaluation.

A rule listens to an event (``entity.transitioned``, ``sla.breached``), tests a predicate over it and runs
actions (``activities.entities`` performs them). Every evaluation is counted in
``automation_trigger_evaluations_total{trigger_id,outcome}``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.entity_metrics import AUTOMATION_EVALUATIONS
from core.errors import Conflict, Unprocessable
from core.models import StoredAutomation
from workflows import expressions
from workflows.entity_messages import EntityEvent
from workflows.lifecycles import (
    BUILT_IN,
    AutomationRule,
    LifecycleInvalid,
    load_automation,
    parse_automation,
)


def builtin_rules() -> list[AutomationRule]:
    """The built-in lifecycles' rules."""
    return [
        AutomationRule(**{**asdict(rule), "actions": rule.actions, "entity_type": lifecycle.type})
        for lifecycle in BUILT_IN.values()
        for rule in lifecycle.automations
    ]


async def create_automation(session: AsyncSession, *, document: dict[str, Any]) -> StoredAutomation:
    """Validate and store a rule; ids are unique, the built-in rules' included (409)."""
    try:
        rule = parse_automation(document, "$")
    except LifecycleInvalid as exc:
        raise Unprocessable(
            "AUTOMATION_INVALID", f"the rule has {len(exc.problems)} problem(s)", {"problems": exc.problems}
        ) from None
    assert rule is not None
    taken = {r.id for r in builtin_rules()}
    if rule.id in taken or await session.get(StoredAutomation, rule.id) is not None:
        raise Conflict("AUTOMATION_EXISTS", f"an automation {rule.id!r} exists", {"id": rule.id})
    row = StoredAutomation(
        id=rule.id,
        entity_type=rule.entity_type,
        event=rule.event,
        predicate=rule.predicate,
        actions=[{"type": a.type, **a.params} for a in rule.actions],
        description=rule.description,
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("AUTOMATION_EXISTS", f"an automation {rule.id!r} exists", {"id": rule.id}) from None
    return row


async def list_automations(session: AsyncSession) -> list[StoredAutomation]:
    """Stored rules, oldest first."""
    return list(
        (await session.exec(select(StoredAutomation).order_by(col(StoredAutomation.created_at)))).all()
    )


def stored_rule(row: StoredAutomation) -> AutomationRule:
    """A stored row as a rule (it was validated when stored)."""
    return load_automation(
        {
            "id": row.id,
            "event": row.event,
            "predicate": row.predicate,
            "actions": row.actions,
            "description": row.description,
            "entity_type": row.entity_type,
        }
    )


async def rules_for(session: AsyncSession, event: EntityEvent) -> list[AutomationRule]:
    """The rules listening to ``event``: the entity's lifecycle's (carried in the event), then stored ones."""
    carried = [load_automation(doc) for doc in event.automations]
    query = select(StoredAutomation).where(
        col(StoredAutomation.event) == event.event, col(StoredAutomation.active).is_(True)
    )
    rows = (await session.exec(query.order_by(col(StoredAutomation.created_at)))).all()
    stored = [stored_rule(row) for row in rows if row.entity_type in (None, event.entity_type)]
    return carried + stored


def event_context(event: EntityEvent) -> dict[str, Any]:
    """What predicates and action templates read: ``event``."""
    data = asdict(event)
    data.pop("automations", None)
    return {"event": data}


def evaluate(rule: AutomationRule, context: dict[str, Any]) -> bool | None:
    """Whether the rule's predicate holds (None when it failed to evaluate); counted either way."""
    try:
        matched = rule.predicate is None or expressions.truthy(expressions.render(rule.predicate, context))
    except expressions.ExpressionError:
        AUTOMATION_EVALUATIONS.labels(rule.id, "error").inc()
        return None
    AUTOMATION_EVALUATIONS.labels(rule.id, "matched" if matched else "not_matched").inc()
    return matched
