"""``conveyor pipeline ...`` and ``conveyor advance`` against the real API, dev server and stage workers."""

from __future__ import annotations

from pathlib import Path

from activities.stages import StageItem, StageResult, register
from tests.support.pipelines import Stack, create, fresh, pipeline, result, stack, stage_of
from tests.support.waiting import until
from tests.test_cli import conveyor
from worker import stage_workers

__all__ = ["stack"]  # the fixture


async def _length(item: StageItem) -> StageResult:
    return StageResult({"bytes": len(item.read_blob())})


async def test_upload_stages_metrics_pause_resume_and_advance(stack: Stack, tmp_path: Path) -> None:
    measure, later = fresh(), fresh()
    name = fresh("p")
    await create(stack, pipeline(name, measure, later))
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text("four")
    files[1].write_text("seven!!")
    async with stage_workers(stack.client, stack.settings, [register(measure, _length)], max_concurrent=2):
        uploaded = await conveyor(stack.http, "pipeline", "upload", name, *map(str, files), "--json")
        assert uploaded.code == 0, uploaded
        items = [row["execution_id"] for row in uploaded.json]
        assert [row["stage"] for row in uploaded.json] == ["NEW", "NEW"]

        async def both_at_later() -> bool:
            return [await stage_of(stack.client, item) for item in items] == [later, later]

        await until(both_at_later, "both items measured and waiting at the next stage")
        listed = await conveyor(stack.http, "pipeline", "stages", name)
        assert listed.code == 0 and f"stage.{measure}" in listed.out and later.upper() in listed.out
        paused = await conveyor(stack.http, "pipeline", "pause", name, later)
        assert paused.code == 0 and "paused" in paused.out
        shown = await conveyor(stack.http, "pipeline", "metrics", name)
        assert shown.code == 0 and f"{later.upper()} (paused)" in shown.out, shown.out
        resumed = await conveyor(stack.http, "pipeline", "resume", name, later)
        assert resumed.code == 0 and "resumed" in resumed.out
        for item, size in zip(items, (4, 7), strict=True):
            moved = await conveyor(stack.http, "advance", item, later, "--output", f'{{"bytes": {size}}}')
            assert moved.code == 0, moved
            view = await result(stack, item)
            assert view["output"] == {"bytes": size}
    missing = await conveyor(stack.http, "pipeline", "metrics", "no-such-pipeline")
    assert missing.code == 1 and "DEFINITION_NOT_FOUND" in missing.err
