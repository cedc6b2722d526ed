"""B1 at a tiny size, so the benchmark keeps running as the interpreter changes (numbers are not checked)."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from bench import b1_interpreter as b1
from tests.support.target import Target


async def test_b1_runs_both_sides(temporal_env: WorkflowEnvironment, target: Target) -> None:
    result = await b1.measure(
        temporal_env.client,
        n=5,
        concurrency=5,
        sequential=2,
        warmup=1,
        target_url=target.url,
        progress=False,
    )
    assert set(result.sides) == {b1.INTERPRETER, b1.BASELINE}
    for side in result.sides.values():
        assert side.completed_load == 5
        assert side.completed_sequential == 2
        assert side.throughput_per_s > 0
        assert len(side.raw_runs) == 2
        assert len(side.raw_load_runs) == 5
        assert all(run.events > 0 and run.server_ms > 0 for run in side.raw_runs + side.raw_load_runs)
        assert side.events_per_run > 0
    assert result.sides[b1.INTERPRETER].events_per_run >= result.sides[b1.BASELINE].events_per_run
    assert "| throughput |" in result.table()
