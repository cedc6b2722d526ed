"""Long waits on the time-skipping test server: delays of hours and retry backoff of minutes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.outcome import completes, fails, statuses
from tests.support.target import Target
from worker import conveyor_worker


@pytest.fixture
def skipping_client(skipping_env: WorkflowEnvironment) -> Client:
    return skipping_env.client


@pytest.fixture
async def skipping_worker(skipping_client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A Conveyor worker on the time-skipping server, on this test's own task queue."""
    async with conveyor_worker(skipping_client, settings, task_queue=f"skip-{uuid.uuid4()}") as running:
        yield running


async def test_a_two_hour_delay(skipping_client: Client, skipping_worker: Worker) -> None:
    began = time.monotonic()
    result = await completes(
        skipping_client,
        skipping_worker.task_queue,
        {
            "name": "waits",
            "steps": [
                {"id": "nap", "type": "delay", "with": {"duration": "2h"}},
                {"id": "after", "type": "transform", "with": {"value": "{{ execution.started_at }}"}},
            ],
        },
    )
    assert statuses(result) == {"nap": "completed", "after": "completed"}
    nap = result.steps[0]
    assert nap.started_at and nap.closed_at
    waited = datetime.fromisoformat(nap.closed_at) - datetime.fromisoformat(nap.started_at)
    assert waited >= timedelta(hours=2)
    assert time.monotonic() - began < 30, "time was skipped, not waited"


async def test_a_delay_from_a_template(skipping_client: Client, skipping_worker: Worker) -> None:
    result = await completes(
        skipping_client,
        skipping_worker.task_queue,
        {
            "name": "waits",
            "steps": [{"id": "nap", "type": "delay", "with": {"duration": "{{ input.wait }}"}}],
        },
        {"wait": "3h"},
    )
    nap = result.steps[0]
    assert nap.started_at and nap.closed_at
    waited = datetime.fromisoformat(nap.closed_at) - datetime.fromisoformat(nap.started_at)
    assert waited >= timedelta(hours=3)


@pytest.mark.parametrize("aware", [True, False], ids=["with-offset", "naive-is-utc"])
async def test_a_delay_until_a_time(skipping_client: Client, skipping_worker: Worker, aware: bool) -> None:
    until = datetime.now(UTC) + timedelta(days=1)
    text = until.isoformat() if aware else until.replace(tzinfo=None).isoformat()
    result = await completes(
        skipping_client,
        skipping_worker.task_queue,
        {"name": "waits", "steps": [{"id": "nap", "type": "delay", "with": {"until": text}}]},
    )
    closed = result.steps[0].closed_at
    assert closed is not None and datetime.fromisoformat(closed) >= until


async def test_a_delay_until_a_time_in_the_past_does_not_wait(
    skipping_client: Client, skipping_worker: Worker
) -> None:
    result = await completes(
        skipping_client,
        skipping_worker.task_queue,
        {
            "name": "waits",
            "steps": [{"id": "nap", "type": "delay", "with": {"until": "2001-01-01T00:00:00Z"}}],
        },
    )
    assert statuses(result) == {"nap": "completed"}


async def test_a_delay_until_something_not_a_time(skipping_client: Client, skipping_worker: Worker) -> None:
    failure = await fails(
        skipping_client,
        skipping_worker.task_queue,
        {"name": "waits", "steps": [{"id": "nap", "type": "delay", "with": {"until": "next tuesday"}}]},
    )
    assert failure.type == "ConfigInvalid"
    assert "ISO 8601" in failure.error["message"]


async def test_retry_backoff_of_minutes(
    skipping_client: Client, skipping_worker: Worker, target: Target
) -> None:
    flaky = uuid.uuid4().hex
    began = time.monotonic()
    result = await completes(
        skipping_client,
        skipping_worker.task_queue,
        {
            "name": "waits",
            "steps": [
                {
                    "id": "call",
                    "type": "http_request",
                    "retry": {
                        "max_attempts": 4,
                        "initial_interval": "2m",
                        "backoff": 3.0,
                        "max_interval": "1h",
                    },
                    "with": {"url": f"{target.url}/flaky/{flaky}/2"},
                }
            ],
        },
    )
    assert result.steps[0].attempts == 3
    assert result.output["body"] == {"attempt": 3, "ok": True}
    assert target.counts[flaky] == 3
    call = result.steps[0]
    assert call.started_at and call.closed_at
    # 2 minutes, then 6, each jittered down by up to half: the backoff really happened, in skipped time.
    waited = datetime.fromisoformat(call.closed_at) - datetime.fromisoformat(call.started_at)
    assert timedelta(minutes=4) <= waited <= timedelta(minutes=9)
    assert time.monotonic() - began < 30
