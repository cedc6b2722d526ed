"""SLA tracking under the time-skipping server: a durable timer fires a breach once; completing in time
records a met SLA; a configured pause state stops the clock.

The store is real (SQLite, and PostgreSQL for the breach test); the alert goes to the loopback target
through the ``webhook`` notification channel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core import automations, entities, sla
from core.entity_metrics import AUTOMATION_EVALUATIONS, SLA_BREACHES
from core.models import SlaRecord
from core.settings import Settings
from tests.support.connectors import migrated_store
from tests.support.target import Target
from tests.support.waiting import eventually
from worker import conveyor_worker
from workflows.entity_messages import TransitionRequest
from workflows.lifecycles import ADMIN_ROLE, Actor

T = TypeVar("T")
ADMIN = Actor.of_role("alice", ADMIN_ROLE)


@dataclass
class Bench:
    """A worker on the time-skipping server with its own queue and store."""

    env: WorkflowEnvironment
    sessions: async_sessionmaker[AsyncSession]
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    async def create(self, task_type: str, **fields: Any) -> str:
        async with self.sessions() as session:
            created = await entities.create_entity(
                session,
                self.client,
                task_queue=self.task_queue,
                entity_type="task",
                data={"title": f"{task_type} work", "task_type": task_type, **fields},
                actor=ADMIN,
            )
        return created.entity.id

    async def move(self, entity_id: str, target: str) -> None:
        await entities.transition_entity(
            self.client,
            entity_type="task",
            entity_id=entity_id,
            request=TransitionRequest(
                target_state=target, actor=ADMIN.name, role=ADMIN.role, permissions=list(ADMIN.permissions)
            ),
        )

    async def finished(self, entity_id: str) -> None:
        """Wait for a final entity's workflow to end, so no activity of it outlives this test's worker
        (the time-skipping server would not skip time past it for the next test)."""
        await self.client.get_workflow_handle(entities.workflow_id("task", entity_id)).result()

    async def records(self, entity_id: str) -> list[SlaRecord]:
        async with self.sessions() as session:
            return await sla.sla_records(session, entity_type="task", entity_id=entity_id)


@pytest.fixture
async def bench(skipping_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Bench]:
    url = database_url
    async with migrated_store(url) as sessions:
        task_queue = f"tq-{uuid.uuid4()}"
        settings = Settings(task_queue=task_queue, database_url=url)
        async with conveyor_worker(skipping_env.client, settings):
            yield Bench(skipping_env, sessions, task_queue)


async def test_intake_left_in_progress_breaches_once_and_alerts(bench: Bench, target: Target) -> None:
    hook = f"/hook/sla-{uuid.uuid4().hex[:8]}"
    async with bench.sessions() as session:
        await automations.create_automation(
            session,
            document={
                "id": f"breach-{uuid.uuid4().hex[:8]}",
                "event": "sla.breached",
                "entity_type": "task",
                "predicate": "{{ event.entity.task_type == 'intake' }}",
                "actions": [
                    {
                        "type": "emit_alert",
                        "channel": "webhook",
                        "url": f"{target.url}{hook}",
                        "payload": {"entity": "{{ event.entity_id }}", "sla": "{{ event.sla }}"},
                    }
                ],
            },
        )
    breaches_before = SLA_BREACHES._value.get()
    builtin_alert = AUTOMATION_EVALUATIONS.labels("task_sla_breached", "matched")
    builtin_before = builtin_alert._value.get()
    task = await bench.create("intake")
    await bench.move(task, "in_progress")
    await bench.env.sleep(timedelta(minutes=61))

    def alerts() -> list[dict[str, Any]]:
        return [r for r in target.requests if r.get("path") == hook]

    async def breached() -> SlaRecord | None:
        records = await bench.records(task)
        return records[0] if records and records[0].breached and alerts() else None

    record = await eventually(breached, "the breach recorded and alerted")
    assert record.target_minutes == 60
    assert record.completed_at is None and record.breached_at is not None
    assert alerts()[0]["json"]["entity"] == task
    assert alerts()[0]["json"]["sla"]["target_minutes"] == 60
    # Hours later, and after completing late, it is still one breach and one alert.
    await bench.env.sleep(timedelta(hours=3))
    await bench.move(task, "completed")
    done = await eventually(
        lambda: _first_completed(bench, task), "the late completion recorded on the same record"
    )
    assert done.breached and done.actual_minutes is not None and done.actual_minutes > 60
    await bench.finished(task)
    assert len(await bench.records(task)) == 1
    assert len(alerts()) == 1
    assert SLA_BREACHES._value.get() - breaches_before == 1
    assert builtin_alert._value.get() - builtin_before == 1  # the built-in rule logged it too


async def _first_completed(bench: Bench, entity_id: str) -> SlaRecord | None:
    records = await bench.records(entity_id)
    return records[0] if records and records[0].completed_at is not None else None


async def test_intake_completed_in_time_records_a_met_sla(bench: Bench) -> None:
    task = await bench.create("intake")
    await bench.move(task, "in_progress")
    await bench.env.sleep(timedelta(minutes=30))
    await bench.move(task, "completed")
    record = await eventually(lambda: _first_completed(bench, task), "the SLA record")
    assert not record.breached and record.breached_at is None
    assert record.target_minutes == 60
    assert record.actual_minutes is not None and 30 <= record.actual_minutes < 35
    handle = bench.client.get_workflow_handle(entities.workflow_id("task", task))
    await handle.result()  # final and nothing left to do: the workflow ends, its timer cancelled
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    await bench.env.sleep(timedelta(hours=2))
    assert [r.breached for r in await bench.records(task)] == [False]


@pytest.mark.parametrize("pause", [True, False], ids=["paused-while-blocked", "not-paused"])
async def test_blocked_pauses_tracking_when_configured(bench: Bench, pause: bool) -> None:
    task_type = f"review-{uuid.uuid4().hex[:6]}"
    async with bench.sessions() as session:
        await sla.create_sla_config(
            session,
            entity_type="task",
            task_type=task_type,
            target_minutes=60,
            pause_on=["blocked"] if pause else [],
        )
    task = await bench.create(task_type)
    await bench.move(task, "in_progress")
    await bench.env.sleep(timedelta(minutes=40))
    await bench.move(task, "blocked")
    await bench.env.sleep(timedelta(minutes=120))
    await bench.move(task, "in_progress")
    await bench.env.sleep(timedelta(minutes=10))
    await bench.move(task, "completed")
    await bench.finished(task)
    record = await eventually(lambda: _first_completed(bench, task), "the SLA record")
    assert record.actual_minutes is not None
    if pause:
        assert not record.breached
        assert 50 <= record.actual_minutes < 55  # 40 + 10: the two hours blocked do not count
    else:
        assert record.breached and record.breached_at is not None
        assert record.actual_minutes >= 170
