"""B4 at a small size (30 entities per side), so the benchmark keeps running as entities change.

Only completeness is checked, not timings.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from bench import b4_entities as b4

ENTITIES = 30


async def test_b4_runs_both_sides(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    result = await b4.measure(
        temporal_env.client, entities_n=ENTITIES, concurrency=10, store_dir=tmp_path, progress=False
    )
    assert set(result.sides) == {b4.CONVEYOR, b4.BASELINE}
    for side in result.sides.values():
        assert side.errors == 0, (side.side, side.error_samples)
        assert side.open_with_timer == ENTITIES, side.side  # its own entities only: the server is shared
        assert side.still_running == 0, side.side
        assert side.creates_per_s > 0 and side.transitions_per_s > 0
        assert side.worker_rss_mb > 0
    conveyor = result.sides[b4.CONVEYOR]
    # Conveyor records the SLA and runs automations, so its entity history is longer than the baseline's.
    assert conveyor.sample_history_events > result.sides[b4.BASELINE].sample_history_events
    assert "| entities created / s |" in result.table()
