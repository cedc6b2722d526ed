"""Schedule triggers as Temporal Schedules on the real dev server: API lifecycle and overlap policies.

The time-skipping test server does not implement schedules (CreateSchedule is "unimplemented" there), so
"five minutes of an every-minute schedule" is a backfill of five past minutes on the dev server: Temporal
takes all five actions at once, while the first run (a 90 s delay; no worker even picks it up) is still
running, and applies the overlap policy to each exactly as it would to firings a minute apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from core import names, schedules
from core.models import DefinitionVersion
from core.settings import Settings

NAP = {
    "name": "nap",
    "input": {"type": "object", "properties": {"who": {"type": "string", "default": "nobody"}}},
    "steps": [
        {"id": "nap", "type": "delay", "with": {"duration": "90s"}},
        {"id": "done", "type": "transform", "with": {"value": "{{ input.who }}"}},
    ],
}
QUICK = {
    "name": "quick",
    "input": {"type": "object", "properties": {"who": {"type": "string"}}},
    "steps": [{"id": "say", "type": "transform", "with": {"value": "{{ input.who }}"}}],
}


async def _eventually(check: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_schedule_lifecycle_through_the_api(api: httpx.AsyncClient, client: Client) -> None:
    assert (await api.post("/api/v1/definitions", json=QUICK)).status_code == 201
    created = await api.post(
        "/api/v1/definitions/quick/triggers",
        json={
            "type": "schedule",
            "config": {
                "cron": "0 3 * * *",
                "timezone": "Europe/Berlin",
                "overlap": "buffer_one",
                "catchup_window": "10m",
                "input": {"who": "cron"},
            },
        },
    )
    assert created.status_code == 201, created.text
    trigger = created.json()
    assert trigger["schedule_id"] == f"conveyor-{trigger['id']}" and trigger["url"] is None
    handle = client.get_schedule_handle(trigger["schedule_id"])
    description = await handle.describe()
    assert description.schedule.spec.cron_expressions == ["0 3 * * *"] or description.schedule.spec.calendars
    assert description.schedule.spec.time_zone_name == "Europe/Berlin"
    assert description.schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert description.schedule.policy.catchup_window == timedelta(minutes=10)
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == names.DEFINITION_WORKFLOW
    assert action.typed_search_attributes.get(names.SA_TRIGGER) == "schedule"

    assert (await api.post(f"/api/v1/triggers/{trigger['id']}/pause")).json()["paused"] is True
    assert (await handle.describe()).schedule.state.paused is True
    assert (await api.post(f"/api/v1/triggers/{trigger['id']}/resume")).json()["paused"] is False
    assert (await handle.describe()).schedule.state.paused is False

    assert (await api.post(f"/api/v1/triggers/{trigger['id']}/run")).status_code == 202

    async def ran() -> list[str]:
        return [
            w.id
            async for w in client.list_workflows(f"WorkflowId STARTS_WITH 'quick/schedule-{trigger['id']}'")
        ]

    runs = await _eventually(ran)
    assert len(runs) == 1
    result = await client.get_workflow_handle(runs[0]).result()
    assert result["output"] == "cron" and result["version"] == 1
    view = (await api.get(f"/api/v1/triggers/{trigger['id']}")).json()
    assert view["schedule"]["num_actions"] == 1 and view["schedule"]["next_runs"]

    # Publishing v2 re-points the schedule: the next run uses it.
    v2 = {**QUICK, "steps": [{"id": "say", "type": "transform", "with": {"value": "v2 {{ input.who }}"}}]}
    assert (await api.post("/api/v1/definitions", json=v2)).json()["version"] == 2
    assert (await api.post("/api/v1/definitions/quick/versions/2/publish")).status_code == 200
    assert (await api.get(f"/api/v1/triggers/{trigger['id']}")).json()["schedule"]["version"] == 2

    patched = await api.patch(
        f"/api/v1/triggers/{trigger['id']}", json={"config": {"cron": None, "interval": "1h"}}
    )
    assert patched.status_code == 200, patched.text
    assert (await handle.describe()).schedule.spec.intervals[0].every == timedelta(hours=1)

    bad = await api.post(
        "/api/v1/definitions/quick/triggers",
        json={"type": "schedule", "config": {"interval": "1h", "cron": "x"}},
    )
    assert bad.status_code == 422
    bad_zone = await api.post(
        "/api/v1/definitions/quick/triggers",
        json={"type": "schedule", "config": {"interval": "1h", "timezone": "Mars/Base"}},
    )
    assert bad_zone.status_code == 422
    listed = (await api.get("/api/v1/triggers?definition=quick")).json()
    assert [t["id"] for t in listed] == [trigger["id"]]

    assert (await api.delete(f"/api/v1/triggers/{trigger['id']}")).status_code == 200
    with pytest.raises(Exception, match="not found"):
        await handle.describe()
    assert (await api.get(f"/api/v1/triggers/{trigger['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"cron": "0 */5 * * * *"}, "cron", "five fields"),
        ({"cron": "*/5 * * * * *"}, "cron", "has 6"),
        ({"cron": "@every 5s"}, "cron", "not @every"),
        ({"cron": "@daily"}, "cron", "macros"),
        ({"cron": "CRON_TZ=Asia/Tokyo 0 9 * * *"}, "cron", "has 6"),
        ({"cron": "0 9 * * * # nine"}, "cron", "has 7"),
        ({"cron": "0 0 1 * mon"}, "cron", "both the day of month and the day of week"),
        ({"cron": "61 * * * *"}, "cron", "minute: '61' is not in 0-59"),
        ({"cron": "0 0 L * *"}, "cron", "day of month"),
        ({"cron": "5/15 * * * *"}, "cron", "a step follows"),
        ({"interval": "999999999999d"}, "interval", "at most ten years"),
        ({"interval": "1h", "jitter": "999999999999d"}, "jitter", "at most ten years"),
    ],
)
async def test_a_schedule_takes_only_what_the_readme_documents(
    api: httpx.AsyncClient, client: Client, config: dict[str, Any], field: str, words: str
) -> None:
    assert (await api.post("/api/v1/definitions", json=QUICK)).status_code in (200, 201)
    answer = await api.post("/api/v1/definitions/quick/triggers", json={"type": "schedule", "config": config})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error_code"] == "TRIGGER_INVALID"
    [problem] = body["details"]["problems"]
    assert problem["path"] == f"$.config.{field}" and words in problem["message"]
    assert (await api.get("/api/v1/triggers?definition=quick")).json() == []  # nothing half-made


async def test_a_five_field_cron_fires_when_classic_cron_would(
    api: httpx.AsyncClient, client: Client
) -> None:
    assert (await api.post("/api/v1/definitions", json=QUICK)).status_code in (200, 201)
    created = await api.post(
        "/api/v1/definitions/quick/triggers",
        json={"type": "schedule", "config": {"cron": "30 9 * * MON-FRI", "paused": True}},
    )
    assert created.status_code == 201, created.text
    trigger_id = created.json()["id"]
    try:
        description = await client.get_schedule_handle(schedules.schedule_id(trigger_id)).describe()
        upcoming = description.info.next_action_times
        assert upcoming, "a paused schedule still lists its next times"
        assert all((t.hour, t.minute, t.weekday() < 5) == (9, 30, True) for t in upcoming)
    finally:
        assert (await api.delete(f"/api/v1/triggers/{trigger_id}")).status_code == 200


@pytest.mark.parametrize(
    ("overlap", "actions", "skipped", "running"),
    [("allow_all", 5, 0, 5), ("skip", 1, 4, 1), ("buffer_one", 1, 3, 1), ("buffer_all", 1, 0, 1)],
)
async def test_overlap_policy_over_five_minutes(
    client: Client, settings: Settings, overlap: str, actions: int, skipped: int, running: int
) -> None:
    trigger_id = uuid.uuid4().hex[:16]
    version = DefinitionVersion(name="nap", version=1, document=NAP, content_hash="-")
    config = schedules.ScheduleConfig.model_validate({"interval": "1m", "overlap": overlap})
    # Paused: no firing of its own during the test; the backfill below is the five minutes.
    await schedules.create_schedule(
        client,
        trigger_id=trigger_id,
        version=version,
        config=config,
        paused=True,
        task_queue=settings.task_queue,
    )
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        await schedules.backfill(
            client,
            trigger_id=trigger_id,
            start=minute - timedelta(seconds=330),
            end=minute - timedelta(seconds=30),
        )

        prefix = f"WorkflowId STARTS_WITH 'nap/schedule-{trigger_id}' AND ExecutionStatus = 'Running'"

        async def observed() -> tuple[int, int, int]:
            seen = await schedules.describe_schedule(client, trigger_id=trigger_id)
            # allow_all runs are not tracked by the schedule itself: count running workflows in visibility.
            running_now = len([w async for w in client.list_workflows(prefix)])
            return seen["num_actions"], seen["num_actions_skipped_overlap"], running_now

        async def settled() -> bool:
            return await observed() == (actions, skipped, running)

        assert await _eventually(settled), await observed()
        await asyncio.sleep(1.0)  # and nothing more happens afterwards
        assert await observed() == (actions, skipped, running)
    finally:
        await schedules.delete_schedule(client, trigger_id=trigger_id)
        async for execution in client.list_workflows(f"WorkflowId STARTS_WITH 'nap/schedule-{trigger_id}'"):
            with contextlib.suppress(Exception):  # already closed
                await client.get_workflow_handle(execution.id).terminate("test over")
