"""B3 at a small size (250 items, parallelism 20), so the benchmark keeps running as the interpreter changes.

Only completeness and the shape of the histories are checked, not timings.
"""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from bench import b3_foreach as b3
from tests.support.target import Target

ITEMS = 250


async def test_b3_runs_both_sides(temporal_env: WorkflowEnvironment, target: Target) -> None:
    result = await b3.measure(
        temporal_env.client,
        items=ITEMS,
        parallelism=20,
        target_url=target.url,
        warmup=0,
        progress=False,
    )
    assert set(result.sides) == {b3.INTERPRETER, b3.BASELINE}
    for side in result.sides.values():
        assert side.completed_items == ITEMS, side.side
        assert side.results_correct, side.side
        assert side.activities_completed == ITEMS, side.side
        assert side.not_completed == [], side.side
        assert side.workflow_task_failures == 0, side.side
        assert side.history_limit_ok, side.side
        assert side.executions == 1 + 3, side.side  # the parent and three batches of at most 100
        assert side.parent_events < ITEMS / 2, side.side  # the parent holds batches, not items
        assert 0 < side.largest_child_events < b3.HISTORY_LIMIT, side.side
        assert side.wall_s > 0 and side.items_per_s > 0
    assert "| wall time |" in result.table()
