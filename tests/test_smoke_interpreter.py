from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from tests.support.run import start
from tests.support.target import Target


async def test_http_then_transform(client: Client, worker: Worker, target: Target) -> None:
    definition = {
        "name": "smoke",
        "steps": [
            {"id": "call", "type": "http_request", "with": {"url": f"{target.url}/echo?x={{{{ input.x }}}}"}},
            {"id": "pick", "type": "transform", "with": {"value": "{{ steps.call.output.body.query.x }}"}},
        ],
    }
    handle = await start(client, worker.task_queue, definition, {"x": "hello"})
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == "hello"
