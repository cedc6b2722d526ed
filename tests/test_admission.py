"""Admission limits (``limits.max_concurrent`` / ``per_minute`` / ``key`` / ``on_limit``) through the lane
workflows on the real dev server, and the per-minute window on the time-skipping server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.lanes import LaneState, lane_id
from core import names
from core.settings import Settings
from tests.support.run import start
from worker import conveyor_worker
from workflows.definition import DefinitionInvalid, parse
from workflows.messages import ExecutionSnapshot, Transition

Handle = WorkflowHandle[Any, ExecutionSnapshot]


def _limited(limits: dict[str, Any], duration: str = "1s", name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or f"adm-{uuid.uuid4().hex[:8]}",
        "limits": limits,
        "steps": [{"id": "work", "type": "delay", "with": {"duration": duration}}],
        "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
    }


def _interval(snapshot: ExecutionSnapshot) -> tuple[datetime, datetime]:
    """When the execution's step ran: inside the time it held its slot."""
    step = snapshot.steps[0]
    assert step.started_at and step.closed_at, snapshot
    return datetime.fromisoformat(step.started_at), datetime.fromisoformat(step.closed_at)


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    # An end sorts before a start at the same instant: the slot was free by then.
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


async def _history(handle: Handle) -> list[Transition]:
    return await handle.query(names.QUERY_HISTORY, result_type=list[Transition])


async def _until_processing(handle: Handle) -> None:
    for _ in range(200):
        snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
        if snapshot.state == "PROCESSING":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never reached PROCESSING")


async def _cancelled(handle: Handle) -> list[Transition]:
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    return await _history(handle)


async def test_max_concurrent_two_queues_ten_starts(client: Client, worker: Worker) -> None:
    document = _limited({"max_concurrent": 2})
    handles = [await start(client, worker.task_queue, document) for _ in range(10)]
    results = await asyncio.gather(*(h.result() for h in handles))
    assert {r.state for r in results} == {"COMPLETED"}
    assert _most_at_once([_interval(r) for r in results]) == 2
    states = [t.to_state for t in await _history(handles[-1])]
    assert states == ["QUEUED", "PROCESSING", "COMPLETED"]
    # Every slot came back: the lane is empty (and stays until it has been idle for a while).
    lane = client.get_workflow_handle(lane_id(document["name"], None))
    state = await lane.query(names.QUERY_LANE, result_type=LaneState)
    assert state.running == [] and state.waiting == []


async def test_a_key_gives_each_value_its_own_lane(client: Client, worker: Worker) -> None:
    document = {
        **_limited({"max_concurrent": 1, "key": "{{ input.supplier_id }}"}),
        "input": {"type": "object"},
    }
    suppliers = [7, 8, 7, 8]
    handles = [await start(client, worker.task_queue, document, {"supplier_id": s}) for s in suppliers]
    results = await asyncio.gather(*(h.result() for h in handles))
    intervals = [_interval(r) for r in results]
    for supplier in (7, 8):
        mine = [i for i, s in zip(intervals, suppliers, strict=True) if s == supplier]
        assert _most_at_once(mine) == 1
    assert _most_at_once(intervals) == 2
    assert (await client.get_workflow_handle(lane_id(document["name"], "7")).describe()).id.endswith("/7")


async def test_cancel_new_cancels_the_extra_ones(client: Client, worker: Worker) -> None:
    document = _limited({"max_concurrent": 1, "on_limit": "cancel_new"}, duration="2s")
    first = await start(client, worker.task_queue, document)
    await _until_processing(first)
    extra = [await start(client, worker.task_queue, document) for _ in range(2)]
    for handle in extra:
        history = await _cancelled(handle)
        assert [t.to_state for t in history] == ["QUEUED", "CANCELLED"]
        assert "limit reached (max_concurrent 1" in history[-1].reason  # as the server words it
        snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
        assert {s.id: s.status for s in snapshot.steps} == {"work": "skipped", "tidy": "skipped"}
    assert (await first.result()).state == "COMPLETED"


async def test_skip_completes_the_extra_ones_as_skipped(client: Client, worker: Worker) -> None:
    document = _limited({"max_concurrent": 1, "on_limit": "skip"}, duration="2s")
    first = await start(client, worker.task_queue, document)
    await _until_processing(first)
    skipped = await (await start(client, worker.task_queue, document)).result()
    assert skipped.state == "COMPLETED"
    assert skipped.output["skipped"] is True and skipped.output["reason"].startswith("limit reached")
    assert {s.id: s.status for s in skipped.steps} == {"work": "skipped", "tidy": "skipped"}
    assert (await first.result()).output is None


async def test_cancel_oldest_makes_room_for_the_new_one(client: Client, worker: Worker) -> None:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    limits = {"max_concurrent": 1, "on_limit": "cancel_oldest"}
    oldest = await start(client, worker.task_queue, _limited(limits, duration="1h", name=name))
    await _until_processing(oldest)
    newest = await start(client, worker.task_queue, _limited(limits, duration="100ms", name=name))
    assert (await newest.result()).state == "COMPLETED"
    history = await _cancelled(oldest)
    assert [t.to_state for t in history] == ["QUEUED", "PROCESSING", "CANCELLED"]
    assert "cancelled for a newer execution" in history[-1].reason
    snapshot = await oldest.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    assert {s.id: s.status for s in snapshot.steps} == {"work": "cancelled", "tidy": "completed"}


async def test_cancelling_a_queued_execution_frees_its_place(client: Client, worker: Worker) -> None:
    document = _limited({"max_concurrent": 1}, duration="1s")
    first = await start(client, worker.task_queue, document)
    await _until_processing(first)
    queued = await start(client, worker.task_queue, document)
    lane = client.get_workflow_handle(lane_id(document["name"], None))
    for _ in range(100):
        if (await lane.query(names.QUERY_LANE, result_type=LaneState)).waiting:
            break
        await asyncio.sleep(0.05)
    await queued.cancel()
    history = await _cancelled(queued)
    assert [t.to_state for t in history] == ["QUEUED", "CANCELLED"]
    assert history[-1].reason == "cancellation requested"
    snapshot = await queued.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    assert snapshot.steps[1].status == "skipped"  # on_error runs only for an execution that ran
    await first.result()
    for _ in range(100):
        state = await lane.query(names.QUERY_LANE, result_type=LaneState)
        if not state.running:
            break
        await asyncio.sleep(0.05)
    assert state.running == [] and state.waiting == []


async def test_no_limits_no_admission_commands(client: Client, worker: Worker) -> None:
    handle = await start(client, worker.task_queue, _limited({}, duration="10ms"))
    await handle.result()
    events = (await handle.fetch_history()).events
    kinds = {event.event_type for event in events}
    # The interpreter's version patches are markers of their own ("core_patch"); admission adds none.
    markers = {
        e.marker_recorded_event_attributes.marker_name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    }
    assert markers <= {"core_patch"}, markers
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    assert EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED not in kinds


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        ({"key": "{{ input.a }}"}, "$.limits"),
        ({"on_limit": "skip"}, "$.limits"),
        ({"per_minute": 5, "on_limit": "cancel_oldest"}, "$.limits"),
        ({"max_concurrent": 1, "on_limit": "drop"}, "$.limits.on_limit"),
        ({"max_concurrent": 1, "key": "{{ steps.work.output }}"}, "$.limits.key"),
    ],
)
def test_bad_limits_are_refused(limits: dict[str, Any], path: str) -> None:
    with pytest.raises(DefinitionInvalid) as invalid:
        parse(_limited(limits))
    assert [p.path for p in invalid.value.problems] == [path]


@pytest.fixture
async def skipping_worker(skipping_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Worker]:
    async with conveyor_worker(skipping_env.client, settings, task_queue=f"skip-{uuid.uuid4()}") as running:
        yield running
        # A lane outlives its executions (it waits idle for ten minutes); left on the time-skipping server
        # without a worker, its pending tasks would stop time skipping for every later test.
        for workflow_id in _LANES:
            with contextlib.suppress(Exception):
                await skipping_env.client.get_workflow_handle(workflow_id).terminate("test over")
        _LANES.clear()


_LANES: list[str] = []


async def _processing_at(handle: Handle) -> datetime:
    history = await _history(handle)
    return datetime.fromisoformat(next(t.at for t in history if t.to_state == "PROCESSING"))


async def _until(check: Callable[[], Awaitable[bool]], what: str, *shown: Handle) -> None:
    deadline = time.monotonic() + 30  # generous: a loaded machine slows each workflow task
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}: {[await _history(h) for h in shown]}")


async def _state(handle: Handle) -> str:
    return (await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)).state


# These tests skip time explicitly (env.sleep) only once every workflow is idle, rather than through
# handle.result(): the time-skipping server also skips while a workflow task is in flight, which with
# several workflows signalling each other can time a task out.


async def test_per_minute_delays_the_third_start_by_a_minute(
    skipping_env: WorkflowEnvironment, skipping_worker: Worker
) -> None:
    client = skipping_env.client
    document = {**_limited({"per_minute": 2}), "steps": [_quick()]}
    handles = [await start(client, skipping_worker.task_queue, document) for _ in range(3)]
    lane = client.get_workflow_handle(lane_id(document["name"], None))
    _LANES.append(lane.id)

    async def two_done_one_waiting() -> bool:
        states = [await _state(h) for h in handles]
        waiting = (await lane.query(names.QUERY_LANE, result_type=LaneState)).waiting
        # The three acquire concurrently, so which one the lane holds back is not fixed.
        return sorted(states) == ["COMPLETED", "COMPLETED", "QUEUED"] and len(waiting) == 1

    await _until(two_done_one_waiting, "two ran at once and the third waits", *handles)
    await skipping_env.sleep(timedelta(seconds=61))

    async def third_done() -> bool:
        return all([await _state(h) == "COMPLETED" for h in handles])

    await _until(third_done, "the third ran a minute later")
    began = sorted([await _processing_at(h) for h in handles])
    assert began[1] - began[0] < timedelta(seconds=5)
    assert timedelta(seconds=59) <= began[2] - began[0] < timedelta(seconds=70)


async def test_a_terminated_holder_is_found_and_its_slot_freed(
    skipping_env: WorkflowEnvironment, skipping_worker: Worker
) -> None:
    client = skipping_env.client
    document = _limited({"max_concurrent": 1}, duration="1h")
    holder = await start(client, skipping_worker.task_queue, document)
    await _until_processing(holder)
    await holder.terminate("gone without releasing")
    waiting = await start(client, skipping_worker.task_queue, {**document, "steps": [_quick()]})
    lane = client.get_workflow_handle(lane_id(document["name"], None))
    _LANES.append(lane.id)

    async def queued() -> bool:
        return len((await lane.query(names.QUERY_LANE, result_type=LaneState)).waiting) == 1

    await _until(queued, "the second execution waits behind the terminated one")
    await skipping_env.sleep(timedelta(seconds=61))

    async def done() -> bool:
        return await _state(waiting) == "COMPLETED"

    await _until(done, "the lane verified its holder and freed the slot")
    # The lane checks its holder after 60 s; the two timestamps may round a millisecond short of it.
    assert await _processing_at(waiting) - await _processing_at(holder) >= timedelta(seconds=59)


def _quick() -> dict[str, Any]:
    return {"id": "work", "type": "transform", "with": {"value": 1}}
