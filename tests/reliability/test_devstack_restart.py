"""kill -9 the worker under ``make run``'s supervisor while executions run: the supervisor starts it again,
every execution completes, and every side effect takes effect once: the README's "kill the worker and
watch" recipe, as a test."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
from temporalio.client import Client

from tests.support.devstack import running_stack, wait_gone
from tests.support.effects import Receiver, effect_step, tally
from tests.support.settle import duplicated_activities, eventually, settle

EXECUTIONS = 30
BOUND_S = 180.0
"""How long the executions get to end after the kill; far beyond what they need."""


async def test_a_worker_killed_under_make_run_comes_back_and_finishes_the_work(
    receiver: Receiver, tmp_path: Path
) -> None:
    definition = {
        "name": "devstack-kill",
        # A short activity timeout: a step lost with its worker is retried after this, not after 30 s.
        "defaults": {"timeout": "5s", "retry": {"max_attempts": 20, "initial_interval": "500ms"}},
        "steps": [
            effect_step("reserve", receiver.url, hold_s=0.5),
            effect_step("charge", receiver.url, hold_s=0.1),
        ],
    }
    with running_stack(tmp_path) as stack:
        await asyncio.to_thread(stack.expect, r"Conveyor is running")
        children = stack.children()
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
            saved = await api.post("/api/v1/definitions", json=definition)
            assert saved.status_code == 201, saved.text
            started = await asyncio.gather(
                *(
                    api.post("/api/v1/definitions/devstack-kill/executions", json={"input": {}})
                    for _ in range(EXECUTIONS)
                )
            )
        assert all(answer.status_code == 201 for answer in started), [a.text for a in started]
        ids = [answer.json()["execution_id"] for answer in started]

        await eventually(lambda: receiver.in_flight >= 5, "several requests in flight")
        open_requests = receiver.in_flight
        os.kill(children["worker"], signal.SIGKILL)
        print(f"[reliability] killed the make-run worker with {open_requests} requests in flight")
        await asyncio.to_thread(stack.expect, r"worker exited unexpectedly .*; starting it again in")
        await asyncio.to_thread(stack.expect, r"worker started again \(pid \d+\)")

        client = await Client.connect(stack.temporal_address)
        handles = [client.get_workflow_handle(execution_id) for execution_id in ids]
        completed, _ = await settle(handles, BOUND_S)
        counts = tally(receiver, ids, completed, {"reserve", "charge"})
        twice = await duplicated_activities(client, ids)
        counts.duplicated += len(twice)
        counts.notes += [f"scheduled twice in {wid}: {acts}" for wid, acts in twice.items()]
        counts.report(f"worker kill -9 under make run during {EXECUTIONS} executions")
        assert open_requests > 0, "the kill was meant to land mid-step"
        assert counts.lost == 0, "\n".join(counts.notes) + stack.output()[-4000:]
        assert counts.duplicated == 0, "\n".join(counts.notes)
        assert counts.completed == EXECUTIONS
        assert stack.stop(signal.SIGINT) == 0, stack.output()[-4000:]
        assert wait_gone(children) == {}
