"""kill -9 and restart the API during a burst of signed webhook deliveries: every 202 has its execution."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.signatures import sign_github
from tests.support import processes
from tests.support.effects import Counts
from tests.support.settle import eventually, settle
from tests.support.target import free_port

DELIVERIES = 150
SENDERS = 6
KILL_AFTER = 40
"""Answered deliveries before the API is killed; the rest of the burst straddles the restart."""
SECRET = "reliability-hook-secret"
ADMIN_KEY = "cvk_reliability_0123456789abcdef0123"
DEFINITION = {
    "name": "reliability-hook",
    "steps": [{"id": "echo", "type": "transform", "with": {"value": "{{ input }}"}}],
}


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_every_accepted_delivery_has_its_execution(
    temporal_env: WorkflowEnvironment, client: Client, worker: Worker, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = processes.conveyor_env(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=worker.task_queue,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
        bootstrap_admin_key=ADMIN_KEY,
        auth="on",
    )
    api = processes.api(env, port, tmp_path / "api-1.log")
    await api.start()
    await processes.wait_for_api(url, api)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        assert (await http.post("/api/v1/definitions", json=DEFINITION)).status_code == 201
        created = await http.post(
            "/api/v1/definitions/reliability-hook/triggers",
            json={"type": "webhook", "config": {"scheme": "github", "secret": SECRET}},
        )
        assert created.status_code == 201, created.text
        hook_url = created.json()["url"]

    answered: dict[str, tuple[int, str]] = {}
    """Delivery id -> (status, execution id) of its first 2xx answer."""
    refused = 0
    pending = asyncio.Queue[str]()
    for _ in range(DELIVERIES):
        pending.put_nowait(str(uuid.uuid4()))

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal refused
        while not pending.empty():
            delivery = pending.get_nowait()
            body = json.dumps({"delivery": delivery}).encode()
            signed = {
                "content-type": "application/json",
                "X-Hub-Signature-256": sign_github(body, SECRET),
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
            }
            # A partner retries a delivery that got no answer, as GitHub and Stripe do.
            while True:
                try:
                    answer = await http.post(f"{url}{hook_url}", content=body, headers=signed)
                except httpx.TransportError:
                    refused += 1
                    await asyncio.sleep(0.2)
                    continue
                if answer.status_code >= 500:
                    refused += 1
                    await asyncio.sleep(0.2)
                    continue
                assert answer.status_code in (200, 202), answer.text
                answered.setdefault(delivery, (answer.status_code, answer.json()["execution_id"]))
                break

    async def restart() -> None:
        nonlocal api
        await eventually(lambda: len(answered) >= KILL_AFTER, f"{KILL_AFTER} answered deliveries")
        await api.kill()
        print(f"[reliability] API killed after {len(answered)} answered deliveries")
        api = processes.api(env, port, tmp_path / "api-2.log")
        await api.start()
        await processes.wait_for_api(url, api)
        print("[reliability] API restarted on the same store")

    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.gather(restart(), *(sender(http) for _ in range(SENDERS)))

        counts = Counts(started=len(answered))
        missing: list[str] = []
        for delivery, (_, execution_id) in answered.items():
            if not await _exists(client, execution_id):
                missing.append(f"{delivery} -> {execution_id}")
        execution_ids = sorted({execution_id for _, execution_id in answered.values()})
        handles = [client.get_workflow_handle(execution_id) for execution_id in execution_ids]
        completed, _ = await settle(handles, 120.0)
        counts.completed = len(completed)
        counts.lost = len(missing) + (len(answered) - len(completed))
        # One execution per delivery: two deliveries sharing an execution, or one with two, is a duplicate.
        counts.duplicated = len(answered) - len(execution_ids)
        accepted = sum(1 for status, _ in answered.values() if status == 202)
        counts.notes.append(
            f"{accepted} answered 202, {len(answered) - accepted} answered 200 (retried "
            f"after the restart), {refused} attempts got no answer"
        )
        counts.notes += [f"no execution for {line}" for line in missing]
        counts.report("API kill -9 and restart during a webhook burst")
        assert len(answered) == DELIVERIES
        assert counts.lost == 0, "\n".join(counts.notes)
        assert counts.duplicated == 0, "\n".join(counts.notes)
        assert refused > 0, "the burst was meant to straddle the restart"
    finally:
        await api.stop()
