"""kill -9 the worker while 200 executions run: all complete, every side effect takes effect once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.support import processes
from tests.support.effects import Receiver, effect_step, tally
from tests.support.run import start
from tests.support.settle import duplicated_activities, eventually, settle

EXECUTIONS = 200
BOUND_S = 240.0
"""How long the executions get to end after the last kill; far beyond what they need."""


def _definition(receiver: Receiver) -> dict[str, object]:
    return {
        "name": "reliability-kill",
        # A short activity timeout: a task lost with its worker is retried after this, not after 30 s.
        "defaults": {"timeout": "5s", "retry": {"max_attempts": 20, "initial_interval": "500ms"}},
        "steps": [
            effect_step("reserve", receiver.url, hold_s=0.4),
            {"id": "between", "type": "transform", "with": {"value": "{{ steps.reserve.output.status }}"}},
            effect_step("charge", receiver.url, hold_s=0.1),
        ],
    }


async def test_killed_workers_lose_and_repeat_nothing(
    temporal_env: WorkflowEnvironment, client: Client, receiver: Receiver, tmp_path: Path
) -> None:
    task_queue = f"tq-kill-{uuid.uuid4()}"
    env = processes.conveyor_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=task_queue,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
        outbound_allow="127.0.0.1/32",
    )
    workers = [processes.worker(env, tmp_path / "worker-1.log")]
    await workers[0].start()
    try:
        definition = _definition(receiver)
        handles = await asyncio.gather(*(start(client, task_queue, definition) for _ in range(EXECUTIONS)))
        ids = [handle.id for handle in handles]

        # Mid-activity: requests are open at the receiver when the worker dies.
        await eventually(
            lambda: receiver.in_flight > 0 and len(receiver.deliveries) >= 20, "requests in flight"
        )
        open_requests = receiver.in_flight
        await workers[-1].kill()
        print(f"[reliability] killed worker 1 with {open_requests} requests in flight")
        workers.append(processes.worker(env, tmp_path / "worker-2.log"))
        await workers[-1].start()

        # Between steps: many executions have their first effect and not yet their second.
        def half_way() -> bool:
            return len(receiver.effects_of_step("reserve")) >= EXECUTIONS // 2

        await eventually(half_way, "half the executions past their first effect")
        between = sum(1 for i in ids if receiver.effects_of(i) == {"reserve"})
        await workers[-1].kill()
        print(f"[reliability] killed worker 2 with {between} executions between their two effects")
        workers.append(processes.worker(env, tmp_path / "worker-3.log"))
        await workers[-1].start()

        completed, _ = await settle(handles, BOUND_S)
        counts = tally(receiver, ids, completed, {"reserve", "charge"})
        twice = await duplicated_activities(client, ids)
        counts.duplicated += len(twice)
        counts.notes += [f"scheduled twice in {wid}: {acts}" for wid, acts in twice.items()]
        counts.report("worker kill -9 (x2) during 200 executions")
        assert open_requests > 0, "the first kill was meant to land mid-activity"
        assert counts.lost == 0, "\n".join(counts.notes) + workers[-1].output()
        assert counts.duplicated == 0, "\n".join(counts.notes)
        assert counts.completed == EXECUTIONS
    finally:
        for child in workers:
            await child.stop()
