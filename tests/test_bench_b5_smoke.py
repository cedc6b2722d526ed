"""B5 at a small size (8 documents, 0.2 s polls), so the benchmark keeps running as the pipeline changes.

Only completeness and the results' shape are checked, not timings.
"""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from bench import b5_pipeline as b5

DOCUMENTS = 8


async def test_b5_runs_both_sides(temporal_env: WorkflowEnvironment) -> None:
    result = await b5.measure(
        temporal_env.client, documents=DOCUMENTS, slots=2, polls=(0.2, 0.2, 0.2), warmup=1, progress=False
    )
    assert set(result.sides) == {b5.CONVEYOR, b5.POLLING}
    for side in result.sides.values():
        assert side.completed == DOCUMENTS, side.side
        assert side.classes_correct == DOCUMENTS, side.side
        assert side.items_per_s > 0 and side.wall_s > 0
        for stage in b5.STAGES:
            # Every stage of every document was measured: latency covers at least the processor's time.
            assert side.stage_latency_s[stage].p50 >= side.stage_work_s[stage].p50 > 0, (side.side, stage)
        assert side.outside_stages_s is not None and side.outside_stages_s.p50 > -0.001, side.side
    assert result.sides[b5.POLLING].polls > 0
    assert "| items/s |" in result.table()
