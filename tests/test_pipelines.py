"""Staged pipelines end to end: the real API, dev server, interpreter worker and stage workers.

Every test names its stages afresh (``t<hex>``): stage queues live on the session's dev server, and a queue
paused or left with items by one test must not reach another.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.stages import StageItem, StageProcessor, StageResult, register
from core import names
from tests.support import processes
from tests.support.pipelines import (
    Stack,
    add_text,
    completed_runs,
    create,
    fresh,
    metrics,
    pipeline,
    result,
    stack,
    stage_of,
    until,
)
from worker import choose_stages, stage_workers
from workflows import errors

__all__ = ["stack"]  # the fixture


def upper(name: str) -> StageProcessor:
    def process(item: StageItem) -> StageResult:  # a blocking processor: it runs in a thread
        return StageResult({"text": item.read_blob().decode().upper(), "pipeline": item.pipeline})

    return register(name, process)


def count_words(name: str) -> StageProcessor:
    async def process(item: StageItem) -> StageResult:
        text = item.data["previous"]["text"]
        return StageResult({"words": len(text.split()), "text": text})

    return register(name, process)


def echo(name: str) -> StageProcessor:
    class Echo:
        """A processor class: registered once, ``process`` per item."""

        async def process(self, item: StageItem) -> StageResult:
            seconds = float(item.data.get("seconds") or 0)
            if seconds:
                await asyncio.sleep(seconds)
            return StageResult({"echo": item.data["previous"], "attempt": item.attempt})

    return register(name, Echo)


async def test_an_uploaded_file_moves_through_every_stage_to_done(stack: Stack) -> None:
    read, count, tag = fresh(), fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, read, count, tag))
    stages = (await stack.http.get(f"/api/v1/pipelines/{name}/stages")).json()
    assert [(s["name"], s["label"], s["task_queue"]) for s in stages] == [
        (read, read.upper(), f"stage.{read}"),
        (count, count.upper(), f"stage.{count}"),
        (tag, tag.upper(), f"stage.{tag}"),
    ]
    processors = [upper(read), count_words(count), echo(tag)]
    async with stage_workers(stack.client, stack.settings, processors, max_concurrent=2):
        execution_id = await add_text(stack, name, "three small words", source="test")
        view = await result(stack, execution_id)
    assert view["state"] == "COMPLETED", view
    assert view["output"]["echo"] == {"words": 3, "text": "THREE SMALL WORDS"}
    assert await stage_of(stack.client, execution_id) == names.STAGE_DONE
    report = await metrics(stack, name)
    assert report["processed"] == 3 and report["failed"] == 0
    assert report["queue_lengths"] == {read: 0, count: 0, tag: 0}
    for row in report["stages"]:
        assert row["processed"] == 1 and row["avg_duration_ms"] is not None
        assert row["p95_duration_ms"] >= 0


async def test_a_json_item_and_the_same_id_again(stack: Stack) -> None:
    tag = fresh()
    name = fresh("p")
    await create(stack, pipeline(name, tag))
    async with stage_workers(stack.client, stack.settings, [echo(tag)], max_concurrent=1):
        first = await stack.http.post(f"/api/v1/pipelines/{name}/items?id=order-7", json={"sku": "A-1"})
        again = await stack.http.post(f"/api/v1/pipelines/{name}/items?id=order-7", json={"sku": "A-1"})
        assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
        assert first.json()["execution_id"] == again.json()["execution_id"]
        view = await result(stack, first.json()["execution_id"])
    assert view["output"]["echo"]["sku"] == "A-1" and view["input"] == {"sku": "A-1"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_items_wait_at_a_stage_without_workers_and_drain_once_one_starts(stack: Stack) -> None:
    first, extraction = fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, first, extraction))
    async with stage_workers(stack.client, stack.settings, [echo(first)], max_concurrent=4):
        items = [await add_text(stack, name, f"item {n}") for n in range(3)]

        async def waiting() -> bool:
            report = await metrics(stack, name)
            stages = [await stage_of(stack.client, item) for item in items]
            return report["queue_lengths"][extraction] == 3 and stages == [extraction] * 3

        await until(waiting, "three items queued at the extraction stage")
        assert (await completed_runs(stack.settings, extraction)) == {}
        async with stage_workers(stack.client, stack.settings, [echo(extraction)], max_concurrent=2):
            views = [await result(stack, item) for item in items]
    assert [view["state"] for view in views] == ["COMPLETED"] * 3
    assert await completed_runs(stack.settings, extraction) == dict.fromkeys(items, 1)

    async def drained() -> bool:
        # Temporal's backlog count is approximate and cached for a few seconds on the server.
        return bool((await metrics(stack, name))["queue_lengths"][extraction] == 0)

    await until(drained, "the extraction queue to show empty")
    assert [row["processed"] for row in (await metrics(stack, name))["stages"]] == [3, 3]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_paused_stage_holds_its_items_until_resumed(stack: Stack) -> None:
    only = fresh()
    name = fresh("p")
    await create(stack, pipeline(name, only))
    async with stage_workers(stack.client, stack.settings, [echo(only)], max_concurrent=4):
        paused = await stack.http.post(f"/api/v1/pipelines/{name}/stages/{only}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        items = [await add_text(stack, name, f"held {n}") for n in range(2)]

        async def held() -> bool:
            row = (await metrics(stack, name))["stages"][0]
            return bool(row["queue_length"] == 2 and row["paused"] and row["pollers"] >= 1)

        await until(held, "two items held at the paused stage")
        assert await completed_runs(stack.settings, only) == {}
        resumed = await stack.http.post(f"/api/v1/pipelines/{name}/stages/{only}/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        views = [await result(stack, item) for item in items]
    assert [view["state"] for view in views] == ["COMPLETED"] * 2
    assert await completed_runs(stack.settings, only) == dict.fromkeys(items, 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_advance_moves_an_item_past_a_stage_by_hand(stack: Stack) -> None:
    stuck, after = fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, stuck, after))
    async with stage_workers(stack.client, stack.settings, [echo(after)], max_concurrent=1):
        item = await add_text(stack, name, "nobody serves the first stage")

        async def at_stuck() -> bool:
            return await stage_of(stack.client, item) == stuck

        await until(at_stuck, "the item to reach the stage nobody serves")
        moved = await stack.http.post(f"/api/v1/executions/{item}/advance", json={"output": {"by": "hand"}})
        assert moved.status_code == 200, moved.text
        view = await result(stack, item)
    assert view["output"]["echo"] == {"by": "hand"}
    again = await stack.http.post(f"/api/v1/executions/{item}/advance", json={})
    assert again.status_code == 409 and again.json()["error_code"] == "INVALID_STATE"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_retry_of_a_stage_resumes_every_item_parked_there(stack: Stack) -> None:
    picky = fresh()
    name = fresh("p")
    await create(stack, pipeline(name, picky))
    accept = asyncio.Event()

    async def process(item: StageItem) -> StageResult:
        if not accept.is_set():
            raise ApplicationError("unreadable document", type=errors.DATA_INVALID, non_retryable=True)
        return StageResult({"ok": True})

    async with stage_workers(stack.client, stack.settings, [register(picky, process)], max_concurrent=2):
        items = [await add_text(stack, name, f"bad {n}") for n in range(2)]

        async def parked() -> bool:
            return bool((await metrics(stack, name))["stages"][0]["parked"] == 2)

        await until(parked, "both items parked at the stage")
        assert (await metrics(stack, name))["stages"][0]["failed"] == 2
        accept.set()
        retried = await stack.http.post(f"/api/v1/pipelines/{name}/stages/{picky}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["matched"] == 2 and retried.json()["succeeded"] == 2
        views = [await result(stack, item) for item in items]
    assert [view["output"] for view in views] == [{"ok": True}] * 2


async def test_pipeline_routes_refuse_what_is_not_a_pipeline(stack: Stack) -> None:
    await create(stack, {"name": "plain", "steps": [{"id": "a", "type": "set", "with": {"x": 1}}]})
    not_pipeline = await stack.http.get("/api/v1/pipelines/plain/stages")
    assert not_pipeline.status_code == 400 and not_pipeline.json()["error_code"] == "NOT_A_PIPELINE"
    missing = await stack.http.get("/api/v1/pipelines/nothing-here/metrics")
    assert missing.status_code == 404
    only = fresh()
    name = fresh("p")
    await create(stack, pipeline(name, only))
    unknown = await stack.http.post(f"/api/v1/pipelines/{name}/stages/elsewhere/pause")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "STAGE_NOT_FOUND"
    form = await stack.http.post(f"/api/v1/pipelines/{name}/items", files={"other": ("a", b"x")})
    assert form.status_code == 422 and form.json()["details"]["field"] == "file"
    bad_meta = await stack.http.post(
        f"/api/v1/pipelines/{name}/items", files={"file": ("a", b"x")}, data={"metadata": "[1]"}
    )
    assert bad_meta.status_code == 422 and bad_meta.json()["details"]["field"] == "metadata"
    text = await stack.http.post(
        f"/api/v1/pipelines/{name}/items", content=b"x", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    listed = await stack.http.get("/api/v1/executions", params={"definition": name})
    assert listed.status_code == 200 and listed.json()["executions"] == []


async def _nothing(item: StageItem) -> StageResult:
    return StageResult({})


def test_worker_stage_choice() -> None:
    registered = {"a": register("a", _nothing), "b": register("b", _nothing)}
    assert [p.name for p in choose_stages(registered, ["all"])] == ["a", "b"]
    assert [p.name for p in choose_stages(registered, ["b"])] == ["b"]
    with pytest.raises(ValueError, match="no processor for stage zzz; registered: a, b"):
        choose_stages(registered, ["zzz"])
    with pytest.raises(ValueError, match="must match"):
        register("Bad Name", _nothing)


def test_stage_names_are_literal_in_definitions() -> None:
    from workflows.definition import DefinitionInvalid, parse

    with pytest.raises(DefinitionInvalid, match="stage"):
        parse({"name": "p", "steps": [{"id": "a", "type": "stage", "with": {"stage": "{{ input.s }}"}}]})
    parsed = parse({"name": "p", "steps": [{"id": "a", "type": "stage", "with": {"stage": "ok"}}]})
    assert parsed.steps[0].with_["stage"] == "ok"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_stage_workers_share_a_backlog_and_survive_one_being_killed(
    stack: Stack, tmp_path: Path
) -> None:
    """``python worker.py --stages slow`` twice; SIGKILL one mid-item: the other finishes that item after
    the heartbeat timeout, and every item is processed exactly once."""
    queue = f"stage.{fresh('slow')}"
    marks = tmp_path / "marks"
    marks.mkdir()
    name = fresh("p")
    document = pipeline(name, "slow", heartbeat=2)
    document["steps"][0]["with"]["task_queue"] = queue
    await create(stack, document)
    env = processes.conveyor_env(
        temporal_address=stack.settings.temporal_address,
        database_url=stack.settings.database_url,
        stage_modules='["tests.support.stage_processors"]',
    )
    env.update(TEST_STAGE_QUEUE=queue, TEST_STAGE_MARKS=str(marks))
    argv = [sys.executable, str(processes.ROOT / "worker.py"), "--stages", "slow", "--max-concurrent", "1"]
    workers = [processes.Child(f"w{n}", argv, env, tmp_path / f"w{n}.log") for n in range(2)]
    for child in workers:
        await child.start()
    try:
        items = []
        for n in range(4):
            answer = await stack.http.post(f"/api/v1/pipelines/{name}/items", json={"n": n, "seconds": 3})
            assert answer.status_code == 201, answer.text
            items.append(answer.json()["execution_id"])

        def holders() -> dict[int, str]:
            """Worker pid -> the item it is on, from the first-attempt markers."""
            return {int(m.name.rsplit(".", 1)[1]): m.name for m in marks.iterdir()}

        async def both_busy() -> bool:
            return len(holders()) == 2

        await until(both_busy, "both workers to hold an item")
        victim = workers[0]
        assert victim.process is not None and victim.process.pid in holders(), victim.output()
        await victim.kill()
        views = [await result(stack, item) for item in items]
    finally:
        for child in workers:
            await child.stop()
    assert [view["state"] for view in views] == ["COMPLETED"] * 4, workers[1].output()
    survivor = workers[1].process
    assert survivor is not None
    assert {view["output"]["worker"] for view in views} == {survivor.pid}
    assert sorted(view["output"]["n"] for view in views) == [0, 1, 2, 3]
    retried = [view for view in views if view["output"]["attempt"] == 2]
    assert len(retried) == 1  # the killed worker's item, taken over after its heartbeat timeout
    assert await completed_runs(stack.settings, "slow") == dict.fromkeys(items, 1)
