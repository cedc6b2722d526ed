"""Execution statistics through the real API on the real dev server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.support.target import Target


async def test_stats_count_completed_and_failed_executions(api: httpx.AsyncClient, target: Target) -> None:
    name = f"stats-{uuid.uuid4().hex[:8]}"
    document = {
        "name": name,
        "input": {"type": "object", "properties": {"status": {"type": "integer"}}},
        "failure": {"suspend": False, "retries": []},
        "steps": [
            {
                "id": "call",
                "type": "http_request",
                "with": {"url": f"{target.url}/status/{{{{ input.status }}}}"},
            }
        ],
    }
    created = await api.post("/api/v1/definitions", json=document)
    assert created.status_code == 201, created.text
    for status in (200, 200, 200, 422, 422):
        started = await api.post(
            f"/api/v1/definitions/{name}/executions", json={"input": {"status": status}, "wait": 20}
        )
        assert started.json()["state"] == ("COMPLETED" if status == 200 else "FAILED"), started.text

    stats: dict[str, Any] = {}
    for _ in range(100):  # visibility is eventually consistent
        stats = (await api.get("/api/v1/stats", params={"time_range": "1h", "definition": name})).json()
        if stats["closed"] == 5 and sum(stats["error_breakdown"].values()) == 2:
            break
        await asyncio.sleep(0.1)
    assert stats["definition"] == name and stats["time_range"] == "1h"
    assert stats["started"] == 5
    assert stats["state_distribution"]["COMPLETED"] == 3
    assert stats["state_distribution"]["FAILED"] == 2
    assert sum(stats["state_distribution"].values()) == 5
    assert stats["active_executions"] == 0
    assert (stats["closed"], stats["failed"]) == (5, 2)
    assert stats["error_rate"] == 0.4
    assert len(stats["error_breakdown"]) == 1 and next(iter(stats["error_breakdown"].values())) == 2
    assert sum(b["closed"] for b in stats["throughput_per_hour"]) == 5
    assert sum(b["failed"] for b in stats["throughput_per_hour"]) == 2
    assert len(stats["throughput_per_hour"]) == 2  # the hour the range starts in, and this one
    assert 0 < stats["avg_duration_s"] <= stats["p95_duration_s"] < 20
    assert stats["sampled"] is False

    everything = (await api.get("/api/v1/stats")).json()
    assert everything["time_range"] == "24h" and everything["started"] >= 5
    assert len(everything["throughput_per_hour"]) == 25


async def test_a_bad_time_range_is_a_422(api: httpx.AsyncClient) -> None:
    for bad in ("soon", "0s", "32d", "-1h"):
        answer = await api.get("/api/v1/stats", params={"time_range": bad})
        assert answer.status_code == 422, bad
        body = answer.json()
        assert body["error_code"] == "INVALID_TIME_RANGE" and body["details"] == {"field": "time_range"}
    assert (await api.get("/api/v1/stats", params={"time_range": "7d"})).status_code == 200
