"""SLA configs (targets per entity type and task type) and SLA records (what each entity achieved)."""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Unprocessable
from core.lifecycles import get_lifecycle
from core.models import SlaConfig, SlaRecord
from workflows.entity_messages import SlaRecordWrite, SlaTracking
from workflows.lifecycles import Lifecycle, LifecycleInvalid, SlaRule, parse_sla_rule


async def create_sla_config(
    session: AsyncSession,
    *,
    entity_type: str,
    target_minutes: float,
    task_type: str | None = None,
    start_on: list[str] | None = None,
    stop_on: list[str] | None = None,
    pause_on: list[str] | None = None,
    active: bool = True,
) -> SlaConfig:
    """Store an SLA target; states default to those of the lifecycle's own rule and are checked against it.

    Entities created from now on take the newest active config matching their type and task type; running
    entities keep the SLA they started with.
    """
    lifecycle = await get_lifecycle(session, entity_type)
    default = lifecycle.sla_rule(task_type)
    document = {
        "target_minutes": target_minutes,
        "start_on": start_on if start_on is not None else list(default.start_on if default else ()),
        "stop_on": stop_on
        if stop_on is not None
        else list(default.stop_on if default else lifecycle.terminal),
        "pause_on": pause_on if pause_on is not None else list(default.pause_on if default else ()),
    }
    try:
        rule = parse_sla_rule(document, "$", set(lifecycle.states))
    except LifecycleInvalid as exc:
        raise Unprocessable(
            "SLA_CONFIG_INVALID",
            f"the SLA config has {len(exc.problems)} problem(s)",
            {"problems": exc.problems},
        ) from None
    assert rule is not None
    row = SlaConfig(
        id=f"sla_{secrets.token_hex(6)}",
        entity_type=entity_type,
        task_type=task_type,
        target_minutes=rule.target_minutes,
        start_on=list(rule.start_on),
        stop_on=list(rule.stop_on),
        pause_on=list(rule.pause_on),
        active=active,
    )
    session.add(row)
    await session.commit()
    return row


async def list_sla_configs(session: AsyncSession, *, active_only: bool = False) -> list[SlaConfig]:
    """Stored SLA configs, newest first."""
    query = select(SlaConfig).order_by(col(SlaConfig.created_at).desc())
    if active_only:
        query = query.where(col(SlaConfig.active).is_(True))
    return list((await session.exec(query)).all())


def builtin_sla_configs(lifecycles: list[Lifecycle]) -> list[dict[str, Any]]:
    """The lifecycles' own SLA rules, as the defaults stored configs override."""
    return [
        {
            "id": rule.id or None,
            "entity_type": lifecycle.type,
            "builtin": True,
            "active": True,
            **asdict(rule),
        }
        for lifecycle in lifecycles
        for rule in lifecycle.sla
    ]


async def resolve_sla(session: AsyncSession, lifecycle: Lifecycle, task_type: str | None) -> SlaTracking:
    """The SLA a new entity starts with: the newest active stored config for its type and task type, else
    one for its type alone, else the lifecycle's own rule (or none)."""
    query = (
        select(SlaConfig)
        .where(col(SlaConfig.entity_type) == lifecycle.type, col(SlaConfig.active).is_(True))
        .order_by(col(SlaConfig.created_at).desc())
    )
    rows = (await session.exec(query)).all()
    row = next((r for r in rows if r.task_type is not None and r.task_type == task_type), None)
    row = row or next((r for r in rows if r.task_type is None), None)
    if row is not None:
        rule = SlaRule(
            target_minutes=row.target_minutes,
            task_type=row.task_type,
            start_on=tuple(row.start_on),
            stop_on=tuple(row.stop_on),
            pause_on=tuple(row.pause_on),
            id=row.id,
        )
        return SlaTracking(rule=_document(rule), config_id=row.id)
    default = lifecycle.sla_rule(task_type)
    return SlaTracking(
        rule=_document(default) if default else None, config_id=default.id if default else None
    )


def _document(rule: SlaRule) -> dict[str, Any]:
    document = asdict(rule)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in document.items()}


async def write_sla_record(session: AsyncSession, write: SlaRecordWrite) -> bool:
    """Insert or update the record ``write.id``; True when this write is the one that marked it breached.

    Writes of one record come from one workflow in order, and a retried write carries the same values, so
    the last write wins; a breach once recorded is never cleared.
    """
    row = await session.get(SlaRecord, write.id)
    newly_breached = write.breached and (row is None or not row.breached)
    if row is None:
        row = SlaRecord(
            id=write.id,
            entity_type=write.entity_type,
            entity_id=write.entity_id,
            target_minutes=write.target_minutes,
            started_at=datetime.fromisoformat(write.started_at),
        )
    row.task_type = write.task_type
    row.sla_config_id = write.sla_config_id
    row.target_minutes = write.target_minutes
    row.breached = row.breached or write.breached
    if write.breached_at is not None and row.breached_at is None:
        row.breached_at = datetime.fromisoformat(write.breached_at)
    if write.completed_at is not None:
        row.completed_at = datetime.fromisoformat(write.completed_at)
        row.actual_minutes = write.actual_minutes
    session.add(row)
    await session.commit()
    return newly_breached


async def sla_records(session: AsyncSession, *, entity_type: str, entity_id: str) -> list[SlaRecord]:
    """An entity's SLA records, oldest first."""
    query = (
        select(SlaRecord)
        .where(col(SlaRecord.entity_id) == entity_id, col(SlaRecord.entity_type) == entity_type)
        .order_by(col(SlaRecord.started_at))
    )
    return list((await session.exec(query)).all())
