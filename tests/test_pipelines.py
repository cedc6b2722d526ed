"""Staged pipelines end to end: the real API, dev server, interpreter worker and stage workers.

Every test names its stages afresh (``t<hex>``): stage queues live on the session's dev server, and a queue
paused or left with items by one test must not reach another.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
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
)
from tests.support.waiting import until
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

    async def empty() -> bool:  # Temporal's backlog count is approximate and cached for a few seconds
        return bool((await metrics(stack, name))["queue_lengths"] == {read: 0, count: 0, tag: 0})

    await until(empty, "every queue to show empty")
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
        url = f"/api/v1/pipelines/{name}/items?id=doc-1"
        one = await stack.http.post(url, files={"file": ("one.txt", b"one", "text/plain")})
        other = await stack.http.post(url, files={"file": ("two.txt", b"two!", "text/plain")})
        assert one.status_code == 201 and other.status_code == 200, (one.text, other.text)
        # The same id again answers with the item it started, file included, whatever was sent this time.
        assert other.json()["file"] == one.json()["file"] and one.json()["file"]["filename"] == "one.txt"
        await result(stack, one.json()["execution_id"])
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


async def advance(stack: Stack, item: str, stage: str, output: object = None) -> httpx.Response:
    return await stack.http.post(
        f"/api/v1/executions/{item}/advance", json={"stage": stage, "output": output}
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_advance_moves_a_queued_item_past_its_stage_once(stack: Stack) -> None:
    stuck, after = fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, stuck, after))
    async with stage_workers(stack.client, stack.settings, [echo(after)], max_concurrent=1):
        item = await add_text(stack, name, "nobody serves the first stage")

        async def at_stuck() -> bool:
            return await stage_of(stack.client, item) == stuck

        await until(at_stuck, "the item to reach the stage nobody serves")
        wrong = await advance(stack, item, after)
        assert wrong.status_code == 409 and wrong.json()["error_code"] == "INVALID_STATE", wrong.text
        moved = await advance(stack, item, stuck, {"by": "hand"})
        assert moved.status_code == 200, moved.text
        # The same request again (a double click): the item is no longer at that stage.
        again = await advance(stack, item, stuck, {"by": "hand"})
        assert again.status_code == 409, again.text
        view = await result(stack, item)
    assert view["output"]["echo"] == {"by": "hand"}
    missing = await stack.http.post(f"/api/v1/executions/{item}/advance", json={})
    assert missing.status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_advance_cancels_the_processor_working_on_the_item(stack: Stack) -> None:
    busy = fresh()
    name = fresh("p")
    await create(stack, pipeline(name, busy, heartbeat=5))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def process(item: StageItem) -> StageResult:
        started.set()
        try:
            await asyncio.Event().wait()  # works until told otherwise
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return StageResult({})

    async with stage_workers(stack.client, stack.settings, [register(busy, process)], max_concurrent=1):
        item = await add_text(stack, name, "long work")

        async def working() -> bool:
            return started.is_set()

        await until(working, "the processor to start")
        moved = await advance(stack, item, busy, {"skipped": True})
        assert moved.status_code == 200, moved.text
        view = await result(stack, item)

        async def told() -> bool:  # the cancellation reaches the worker with a heartbeat answer
            return cancelled.is_set()

        await until(told, "the processor to be cancelled")
    assert view["output"] == {"skipped": True}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_advance_of_an_item_parked_at_its_stage(stack: Stack) -> None:
    picky, after = fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, picky, after))

    async def process(item: StageItem) -> StageResult:
        raise ApplicationError("unreadable", type=errors.DATA_INVALID, non_retryable=True)

    processors = [register(picky, process), echo(after)]
    async with stage_workers(stack.client, stack.settings, processors, max_concurrent=1):
        item = await add_text(stack, name, "bad")

        async def parked() -> bool:
            view = (await stack.http.get(f"/api/v1/executions/{item}")).json()
            return bool(view["state"] == "SUSPENDED" and view["stage"] == picky)

        await until(parked, "the item to park at its stage")
        moved = await advance(stack, item, picky, {"fixed": "by hand"})
        assert moved.status_code == 200, moved.text
        view = await result(stack, item)
    assert view["output"]["echo"] == {"fixed": "by hand"} and view["stage"] == names.STAGE_DONE


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_advance_moves_every_loop_item_waiting_at_the_stage(stack: Stack) -> None:
    held = fresh()
    name = fresh("p")
    document = {
        "name": name,
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "{{ input.parts }}",
                "parallelism": 2,
                "steps": [{"id": "hold", "type": "stage", "with": {"stage": held, "input": "{{ item }}"}}],
            }
        ],
    }
    await create(stack, document)
    answer = await stack.http.post(f"/api/v1/pipelines/{name}/items", json={"parts": [1, 2]})
    item = answer.json()["execution_id"]

    async def at_held() -> bool:
        return await stage_of(stack.client, item) == held

    await until(at_held, "the loop items to wait at the stage")
    moved = await advance(stack, item, held, {"by": "hand"})
    assert moved.status_code == 200, moved.text
    view = await result(stack, item)
    assert view["state"] == "COMPLETED" and view["stage"] == names.STAGE_DONE


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
    forged = await stack.http.post(f"/api/v1/pipelines/{name}/items", json={"file": {"blob": "0" * 64}})
    assert forged.status_code == 422 and forged.json()["details"]["field"] == "body.file"
    deep = await stack.http.post(
        f"/api/v1/pipelines/{name}/items",
        content=b"[" * 5000 + b"]" * 5000,
        headers={"content-type": "application/json"},
    )
    assert deep.status_code == 400 and deep.json()["error_code"] == "INPUT_TOO_DEEP", deep.text
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
    document = pipeline(name, "slow", heartbeat=5)
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
        for n in range(3):
            answer = await stack.http.post(f"/api/v1/pipelines/{name}/items", json={"n": n, "seconds": 6})
            assert answer.status_code == 201, answer.text
            items.append(answer.json()["execution_id"])

        def holders() -> dict[int, str]:
            """Worker pid -> the item it took first, from the first-attempt markers."""
            marked = sorted(marks.iterdir(), key=lambda m: m.stat().st_mtime)
            return {int(m.name.rsplit(".", 1)[1]): m.name.split(".")[0] for m in reversed(marked)}

        async def both_busy() -> bool:
            return len(holders()) == 2

        await until(both_busy, "both workers to hold an item")
        victim, survivor = workers
        assert victim.process is not None and survivor.process is not None
        lost = holders()[victim.process.pid]
        await victim.kill()
        views = {item: await result(stack, item) for item in items}
    finally:
        for child in workers:
            await child.stop()
    assert [view["state"] for view in views.values()] == ["COMPLETED"] * 3, survivor.output()
    taken_over = next(view for item, view in views.items() if item.replace("/", "_") == lost)
    # The killed worker's item: finished by the other worker, on a second attempt after the heartbeat timeout.
    assert taken_over["output"]["worker"] == survivor.process.pid
    assert taken_over["output"]["attempt"] == 2
    assert sorted(view["output"]["n"] for view in views.values()) == [0, 1, 2]
    assert await completed_runs(stack.settings, "slow") == dict.fromkeys(items, 1)
