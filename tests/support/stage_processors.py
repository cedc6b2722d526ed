"""Stage processors for tests that run ``python worker.py --stages ...`` as a process.

The worker imports this module through ``CONVEYOR_STAGE_MODULES``. ``TEST_STAGE_QUEUE`` gives the ``slow``
stage a queue of the test's own, and each attempt leaves a marker file in ``TEST_STAGE_MARKS`` named
``<execution>.<attempt>.<pid>`` so a test can see which worker holds which item.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from activities.stages import StageItem, StageResult, register

HEARTBEAT_EVERY_S = 0.2


async def slow(item: StageItem) -> StageResult:
    """Works ``item.data["seconds"]`` seconds, heartbeating its progress, and echoes the item."""
    marks = Path(os.environ["TEST_STAGE_MARKS"])
    marker = f"{item.execution_id.replace('/', '_')}.{item.attempt}.{os.getpid()}"
    (marks / marker).touch()
    seconds = float(item.data.get("seconds", 1))
    ticks = int(seconds / HEARTBEAT_EVERY_S)
    for tick in range(ticks):
        item.heartbeat({"done": tick})
        await asyncio.sleep(HEARTBEAT_EVERY_S)
    previous = item.data.get("previous") or {}
    return StageResult({"n": previous.get("n"), "worker": os.getpid(), "attempt": item.attempt})


if "TEST_STAGE_QUEUE" in os.environ:
    register("slow", slow, task_queue=os.environ["TEST_STAGE_QUEUE"])
