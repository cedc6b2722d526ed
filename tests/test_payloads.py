"""Large payloads travel through Temporal by reference to the blob store, and read back whole."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from core.payloads import ENCODING
from tests.support.target import Target

BIG = 600_000


async def test_a_large_step_output_is_a_reference_in_history(
    api: httpx.AsyncClient, client: Client, target: Target
) -> None:
    document = {
        "name": "big-output",
        "steps": [
            {"id": "fetch", "type": "http_request", "with": {"url": f"{target.url}/big?size={BIG}"}},
            {"id": "size", "type": "transform", "with": {"value": "{{ steps.fetch.output.body | length }}"}},
        ],
        "output": {"size": "{{ steps.size.output }}", "body": "{{ steps.fetch.output.body }}"},
    }
    await api.post("/api/v1/definitions", json=document)
    started = await api.post("/api/v1/definitions/big-output/executions", json={"wait": 30})
    body = started.json()
    assert body["state"] == "COMPLETED", body
    assert body["output"]["size"] == BIG and len(body["output"]["body"]) == BIG  # read back whole

    history = await client.get_workflow_handle(body["execution_id"]).fetch_history()
    raw = history.to_json()
    assert len(raw) < BIG / 2  # the history holds references, not the 600 kB (twice)
    completed = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
    [payload] = completed[0].activity_task_completed_event_attributes.result.payloads
    assert payload.metadata["encoding"] == ENCODING

    view = (await api.get(f"/api/v1/executions/{body['execution_id']}")).json()
    assert view["output"]["size"] == BIG
