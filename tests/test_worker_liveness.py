"""Worker counts hold only live workers: Temporal lists a poller for five minutes after its last poll, so a
worker that stopped must drop out of /ready long before that, and an idle live one must never drop out.

The dev server here runs with a two-second long poll (instead of one minute) and the API with a six-second
window, so both happen within seconds; the rule is the same as with the defaults (60 s and 90 s)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core import names
from core.pollers import live_pollers
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.waiting import until
from worker import conveyor_worker

LONG_POLL_S = 2
WINDOW_S = 6.0


def _poller(seen_s_ago: float, now: datetime) -> PollerInfo:
    stamp = Timestamp()
    stamp.FromDatetime(now - timedelta(seconds=seen_s_ago))
    return PollerInfo(identity=f"w-{seen_s_ago}", last_access_time=stamp)


def test_a_poller_counts_while_it_was_seen_within_the_window() -> None:
    now = datetime.now(UTC)
    pollers = [_poller(1, now), _poller(89, now), _poller(91, now), _poller(290, now)]
    assert live_pollers(pollers, within_s=90, now=now) == 2


@pytest.fixture(scope="module")
async def quick_poll_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of its own whose long polls end after two seconds, so live pollers re-poll that often."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            f'matching.longPollExpirationInterval="{LONG_POLL_S}s"',
        ],
    )
    async with env:
        yield env


async def _pollers_listed(client: Client, task_queue: str) -> int:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(described.pollers)


async def test_ready_counts_a_stopped_worker_out_and_an_idle_one_in(
    quick_poll_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    settings = api_settings(
        quick_poll_env,
        task_queue,
        f"sqlite+aiosqlite:///{tmp_path}/api.db",
        worker_live_window_s=WINDOW_S,
    )
    client = quick_poll_env.client
    async with running_api(settings) as api:

        async def workers() -> int:
            answer = await api.get("/ready")
            counted: int = answer.json()["checks"]["workers"]
            assert (answer.status_code == 200) == (counted > 0), answer.text
            return counted

        async def one() -> bool:
            return await workers() == 1

        async def none() -> bool:
            return await workers() == 0

        async with conveyor_worker(client, settings):
            await until(one, "the worker counted")
            # Idle for three windows: each long poll ends and is renewed; the worker never drops out.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3 * WINDOW_S
            while loop.time() < deadline:
                assert await one(), "a live idle worker dropped out of the count"
                await asyncio.sleep(0.5)
        # Stopped: Temporal still lists its poller (for five minutes), but /ready counts it out.
        assert await _pollers_listed(client, task_queue) == 1
        await until(none, "the stopped worker counted out")
        assert await _pollers_listed(client, task_queue) == 1
