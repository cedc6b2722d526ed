"""Re-record the committed replay histories: ``make replay-record`` (run after an intended change).

Starts its own dev server, worker and loopback HTTP target, runs every case of ``cases.py`` and writes each
history to ``histories/<case>.json``. Commit them with the change that made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.stages import StageItem, StageResult, register
from core import names
from core.inputs import prepare_input
from core.settings import Settings
from tests.replay.cases import HISTORIES, ReplayCase, all_cases
from tests.support.run import start
from tests.support.target import Target, serve
from worker import conveyor_worker, stage_workers
from workflows.messages import AdvanceRequest, CancelRequest, RetryRequest

QUEUE = "replay-recorder"


def with_target(case: ReplayCase, url: str) -> tuple[dict[str, object], dict[str, object]]:
    """The case's definition and input with ``{target}`` replaced by the HTTP target's URL."""
    definition = json.loads(json.dumps(case.definition).replace("{target}", url))
    values = json.loads(json.dumps(case.input).replace("{target}", url))
    return definition, values


async def record() -> None:
    binary = Path(sys.executable).parent / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), search_attributes=list(names.SEARCH_ATTRIBUTES)
    )
    target = Target()
    settings = Settings(task_queue=QUEUE)
    echo = register("replay-echo", _echo)
    async with (
        env,
        serve(target.app) as url,
        conveyor_worker(env.client, settings),
        stage_workers(env.client, settings, [echo], max_concurrent=1),
    ):
        target.url = url
        HISTORIES.mkdir(parents=True, exist_ok=True)
        for case in all_cases():
            path = HISTORIES / f"{case.name}.json"
            if path.exists() and "--all" not in sys.argv:
                continue  # a committed history guards the behaviour it was recorded with: keep it
            definition, values = with_target(case, url)
            values = prepare_input(definition.get("input"), values)  # type: ignore[arg-type]
            handle = await start(env.client, QUEUE, definition, values)
            if case.cancel_after_s is not None:
                await asyncio.sleep(case.cancel_after_s)
                await handle.cancel(
                    reason=CancelRequest(actor=case.cancel_by).encode() if case.cancel_by else ""
                )
            if case.signals:
                await _until_state(handle, "WAITING")
                for name, payload in case.signals:
                    await handle.signal(name, payload)
            if case.retry_patch is not None:
                await _until_state(handle, "SUSPENDED")
                patch = json.loads(json.dumps(case.retry_patch).replace("{target}", url))
                await handle.execute_update(names.UPDATE_RETRY, RetryRequest(input_patch=patch))
            if case.advance is not None:
                await _until_step(handle, "held")
                request = AdvanceRequest(stage="unserved", output=case.advance)
                await handle.execute_update(names.UPDATE_ADVANCE, request)
            with contextlib.suppress(WorkflowFailureError):  # failed and cancelled runs are recorded too
                await handle.result()
            history = await handle.fetch_history()
            path.write_text(history.to_json())
            print(f"recorded {case.name}: {len(history.events)} events")


async def _echo(item: StageItem) -> StageResult:
    return StageResult({"echo": item.data})


async def _until_step(handle: WorkflowHandle[Any, Any], step: str) -> None:
    for _ in range(200):
        if (await handle.query(names.QUERY_DESCRIBE))["current_step"] == step:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never reached step {step}")


async def _until_state(handle: WorkflowHandle[Any, Any], state: str) -> None:
    for _ in range(200):
        if (await handle.query(names.QUERY_DESCRIBE))["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never reached {state}")


if __name__ == "__main__":
    asyncio.run(record())
