"""Restart the Temporal dev server on its SQLite file mid-run: every execution resumes, timers fire late."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path

from temporalio.client import Client

from core.payloads import data_converter
from core.settings import Settings
from tests.support import processes
from tests.support.effects import Receiver, effect_step, tally
from tests.support.run import start
from tests.support.settle import duplicated_activities, eventually, settle
from tests.support.target import free_port

EXECUTIONS = 30
DELAY_S = 4
DOWN_S = DELAY_S + 2
"""The server stays down longer than the timers, so each one falls due while nobody can fire it."""
BOUND_S = 240.0


def _definition(receiver: Receiver) -> dict[str, object]:
    return {
        "name": "reliability-restart",
        "defaults": {"timeout": "5s", "retry": {"max_attempts": 20, "initial_interval": "500ms"}},
        "steps": [
            effect_step("before", receiver.url),
            {"id": "wait", "type": "delay", "with": {"duration": f"{DELAY_S}s"}},
            effect_step("after", receiver.url),
        ],
    }


async def test_restarted_server_resumes_everything(
    receiver: Receiver, blob_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    server_args = (tmp_path / "temporal.db", port, free_port(), tmp_path / "temporal.log")
    server = processes.temporal(*server_args)
    await server.start()
    worker: processes.Child | None = None
    try:
        await processes.wait_for_temporal(address, server)
        client = await Client.connect(
            address, data_converter=data_converter(blob_dir, Settings().payload_ref_bytes)
        )
        task_queue = f"tq-restart-{uuid.uuid4()}"
        env = processes.conveyor_env(
            temporal_address=address,
            task_queue=task_queue,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
            outbound_allow="127.0.0.1/32",
        )
        worker = processes.worker(env, tmp_path / "worker.log")
        await worker.start()
        definition = _definition(receiver)
        handles = await asyncio.gather(*(start(client, task_queue, definition) for _ in range(EXECUTIONS)))
        ids = [handle.id for handle in handles]

        await eventually(lambda: len(receiver.effects_of_step("before")) == EXECUTIONS, "every first effect")
        # Every execution is now in (or about to start) its timer.
        await server.kill()
        print(f"[reliability] temporal killed; down for {DOWN_S}s with {EXECUTIONS} timers pending")
        await asyncio.sleep(DOWN_S)
        server = processes.temporal(*server_args)
        await server.start()
        await processes.wait_for_temporal(address, server)
        print("[reliability] temporal restarted on the same database file")

        completed, _ = await settle(handles, BOUND_S)
        counts = tally(receiver, ids, completed, {"before", "after"})
        twice = await duplicated_activities(client, ids)
        counts.duplicated += len(twice)
        lateness: list[float] = []
        for handle in handles:
            if handle.id not in completed:
                continue
            timer = next(step for step in (await handle.result()).steps if step.id == "wait")
            assert timer.status == "completed" and timer.started_at and timer.closed_at
            waited = datetime.fromisoformat(timer.closed_at) - datetime.fromisoformat(timer.started_at)
            lateness.append(waited.total_seconds() - DELAY_S)
        counts.notes.append(f"timers fired {min(lateness or [0]):.1f}..{max(lateness or [0]):.1f}s late")
        counts.report("temporal dev server kill -9 and restart mid-run")
        assert counts.lost == 0, "\n".join(counts.notes) + worker.output()
        assert counts.duplicated == 0, "\n".join(counts.notes)
        assert counts.completed == EXECUTIONS
        # Late, not early and not never: no timer closed before its duration.
        assert all(late >= 0 for late in lateness)
    finally:
        if worker is not None:
            await worker.stop()
        await server.stop()
