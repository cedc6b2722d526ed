"""Live events (SSE) and logs of executions through the real API on the real dev server."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core import events
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.target import Target

FAIL_FAST = {"suspend": False, "retries": []}


def five_steps(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "first", "type": "transform", "with": {"value": 1}},
            {"id": "nap", "type": "delay", "with": {"duration": "1s"}},
            {"id": "second", "type": "transform", "with": {"value": "{{ steps.first.output + 1 }}"}},
            {"id": "note", "type": "notification", "with": {"channel": "log", "message": "halfway"}},
            {"id": "third", "type": "transform", "with": {"value": "{{ steps.second.output + 1 }}"}},
        ],
        "output": "{{ steps.third.output }}",
    }


def breaking(name: str, target: Target, **extra: Any) -> dict[str, Any]:
    """A definition whose second step fails with a data error: the server answers 422."""
    return {
        "name": name,
        "steps": [
            {"id": "ok", "type": "transform", "with": {"value": 0}},
            {
                "id": "call",
                "type": "http_request",
                "with": {"method": "POST", "url": f"{target.url}/status/422"},
            },
        ],
        **extra,
    }


@dataclass
class Message:
    """One SSE message as a client sees it."""

    id: int
    event: str
    data: dict[str, Any]


@dataclass
class Stream:
    """What one SSE connection delivered."""

    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [m.event for m in self.messages]


async def read_stream(
    api: httpx.AsyncClient,
    execution_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    stop_after: int | None = None,
    stop_at: str | None = None,
    stop_on_comment: bool = False,
) -> Stream:
    """Read ``text/event-stream`` until the server ends it, ``stop_after`` messages or event ``stop_at``."""
    stream = Stream()
    fields: dict[str, str] = {}
    async with api.stream(
        "GET", f"/api/v1/executions/{execution_id}/events", headers=headers, params=params
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith(":"):
                stream.comments.append(line[1:].strip())
                if stop_on_comment:
                    return stream
                continue
            if line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
                continue
            if not fields:
                continue
            message = Message(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            fields = {}
            stream.messages.append(message)
            if stop_after is not None and len(stream.messages) >= stop_after:
                return stream
            if stop_at is not None and message.event == stop_at:
                return stream
    return stream


async def _create(api: httpx.AsyncClient, document: dict[str, Any]) -> None:
    answer = await api.post("/api/v1/definitions", json=document)
    assert answer.status_code in (200, 201), answer.text


async def _start(api: httpx.AsyncClient, document: dict[str, Any]) -> str:
    await _create(api, document)
    started = await api.post(f"/api/v1/definitions/{document['name']}/executions", json={})
    assert started.status_code == 201, started.text
    execution_id: str = started.json()["execution_id"]
    return execution_id


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


STEPS = ["first", "nap", "second", "note", "third"]
EXPECTED = [
    ("started", None),
    *[(kind, step) for step in STEPS for kind in ("step_started", "step_completed")],
    ("completed", None),
]


async def test_a_five_step_execution_streams_its_events_in_order(api: httpx.AsyncClient) -> None:
    execution_id = await _start(api, five_steps(_name("five")))
    stream = await asyncio.wait_for(read_stream(api, execution_id), timeout=30)
    assert [(m.event, m.data["step"]) for m in stream.messages] == EXPECTED
    ids = [m.id for m in stream.messages]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert all(m.data["seq"] == m.id and m.data["type"] == m.event for m in stream.messages)
    assert stream.messages[-1].data["data"]["output"] == 3


async def test_a_client_reconnecting_with_last_event_id_misses_none(api: httpx.AsyncClient) -> None:
    execution_id = await _start(api, five_steps(_name("resume")))
    # The first client leaves during the 1 s delay, while the execution is still running.
    early = await asyncio.wait_for(read_stream(api, execution_id, stop_at="step_started"), timeout=30)
    while early.messages[-1].data["step"] != "nap":
        more = await read_stream(
            api, execution_id, headers={"Last-Event-ID": str(early.messages[-1].id)}, stop_after=1
        )
        early.messages += more.messages
    seen = len(early.messages)
    rest = await asyncio.wait_for(
        read_stream(api, execution_id, headers={"Last-Event-ID": str(seen)}), timeout=30
    )
    both = early.messages + rest.messages
    assert [(m.event, m.data["step"]) for m in both] == EXPECTED
    assert [m.id for m in both] == list(range(1, len(EXPECTED) + 1))

    # After the run has closed: a full replay, the header winning over ?after=, and nothing after the end.
    replay = await read_stream(api, execution_id)
    assert [m.id for m in replay.messages] == [m.id for m in both]
    tail = await read_stream(api, execution_id, headers={"Last-Event-ID": "9"}, params={"after": "2"})
    assert [m.id for m in tail.messages] == list(range(10, len(EXPECTED) + 1))
    after = await read_stream(api, execution_id, params={"after": str(len(EXPECTED) - 1)})
    assert after.types == ["completed"]
    assert (await read_stream(api, execution_id, params={"after": str(len(EXPECTED))})).messages == []


async def test_a_failing_execution_ends_the_stream_with_step_failed_then_failed(
    api: httpx.AsyncClient, target: Target
) -> None:
    execution_id = await _start(api, breaking(_name("breaks"), target, failure=FAIL_FAST))
    stream = await asyncio.wait_for(read_stream(api, execution_id), timeout=30)
    assert stream.types[-2:] == ["step_failed", "failed"]
    assert stream.messages[-2].data["step"] == "call"

    errors = (await api.get(f"/api/v1/executions/{execution_id}/logs", params={"level": "error"})).json()
    assert errors and all(e["level"] == "error" and e["step"] == "call" for e in errors)


async def test_a_parked_execution_keeps_the_stream_open_until_it_is_cancelled_and_cleaned_up(
    api: httpx.AsyncClient, target: Target
) -> None:
    tidy = [{"id": "tidy", "type": "transform", "with": {"value": "tidied"}}]
    execution_id = await _start(api, breaking(_name("parks"), target, on_error=tidy))
    reader = asyncio.create_task(read_stream(api, execution_id))
    for _ in range(100):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["state"] == "SUSPENDED":
            break
        await asyncio.sleep(0.05)
    assert view["state"] == "SUSPENDED"
    await asyncio.sleep(0.5)
    assert not reader.done()  # suspended is not the end: the operator may retry or skip
    cancelled = await api.post(f"/api/v1/executions/{execution_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    stream = await asyncio.wait_for(reader, timeout=30)
    kinds = [(m.event, m.data["step"]) for m in stream.messages]
    assert (
        kinds.index(("step_failed", "call"))
        < kinds.index(("suspended", "call"))
        < kinds.index(("cancelled", None))
    )
    # The stream ends with the run, so the cleanup steps that ran after the cancellation are in it too.
    assert ("step_completed", "tidy") in kinds
    assert [m.id for m in stream.messages] == list(range(1, len(kinds) + 1))


async def test_a_quiet_stream_sends_keep_alive_comments(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEP_ALIVE_S", 0.2)
    document = five_steps(_name("quiet"))
    document["steps"][1]["with"] = {"duration": "3s"}
    execution_id = await _start(api, document)
    stream = await asyncio.wait_for(read_stream(api, execution_id, stop_on_comment=True), timeout=30)
    assert stream.comments == ["keep-alive"]


async def test_a_client_leaving_stops_the_history_watch_and_termination_ends_streams(
    api: httpx.AsyncClient,
) -> None:
    document = five_steps(_name("leaves"))
    document["steps"][1]["with"] = {"duration": "1h"}
    execution_id = await _start(api, document)
    reader = asyncio.create_task(read_stream(api, execution_id))
    for _ in range(100):
        if _watching():
            break
        await asyncio.sleep(0.05)
    assert len(_watching()) == 1
    reader.cancel()  # the client goes away in the middle of the hour-long delay
    for _ in range(100):  # the server notices the closed connection, then cancels the feed
        if not _watching():
            break
        await asyncio.sleep(0.05)
    assert not _watching()

    # A terminated run records no end of its own; the stream still ends with one.
    assert (await api.post(f"/api/v1/executions/{execution_id}/terminate")).status_code == 200
    replay = await asyncio.wait_for(read_stream(api, execution_id), timeout=30)
    assert replay.types == ["started", "step_started", "step_completed", "step_started", "cancelled"]
    assert replay.messages[-1].data["data"] == {"temporal_status": "TERMINATED"}
    assert [m.id for m in replay.messages] == [1, 2, 3, 4, 5]


def _watching() -> list[asyncio.Task[Any]]:
    # The API runs in this test's event loop, so its history long-polls are tasks here.
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == events._watch_history.__qualname__
    ]


async def test_logs_filter_by_level_and_step(api: httpx.AsyncClient, target: Target) -> None:
    fast = {"max_attempts": 3, "initial_interval": "100ms", "backoff": 1.0}
    document = {
        "name": _name("logs"),
        "failure": FAIL_FAST,
        "steps": [
            {
                "id": "flaky",
                "type": "http_request",
                "with": {"url": f"{target.url}/flaky/{uuid.uuid4()}/1"},
                "retry": fast,
            },
            {"id": "call", "type": "http_request", "with": {"url": f"{target.url}/status/422"}},
        ],
    }
    execution_id = await _start(api, document)
    await asyncio.wait_for(read_stream(api, execution_id), timeout=30)
    url = f"/api/v1/executions/{execution_id}/logs"

    entries = (await api.get(url)).json()
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert {e["step"] for e in entries} >= {"flaky", "call"}
    assert set(entries[0]) == {"seq", "at", "level", "message", "step", "metadata"}
    flaky = (await api.get(url, params={"step": "flaky"})).json()
    assert flaky and all(e["step"] == "flaky" for e in flaky)
    assert any("attempt 2" in e["message"] for e in flaky)
    for level in ("warning", "error", "ERROR"):
        severe = (await api.get(url, params={"level": level})).json()
        assert severe and {e["level"] for e in severe} <= {"warning", "error"}
        assert "call" in {e["step"] for e in severe}
    assert (await api.get(url, params={"level": "error", "step": "flaky"})).json() == []
    bad = await api.get(url, params={"level": "loud"})
    assert bad.status_code == 422 and bad.json()["details"] == {"field": "level"}


async def test_unknown_execution_is_a_json_404(api: httpx.AsyncClient) -> None:
    for suffix in ("events", "logs"):
        answer = await api.get(f"/api/v1/executions/nobody/nothing/{suffix}")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error_code"] == "EXECUTION_NOT_FOUND"
    bad = await api.get("/api/v1/executions/nobody/nothing/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


BOOTSTRAP = "cvk_boot0000_" + "e" * 40


async def test_viewers_stream_and_open_streams_hold_no_database_connection(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, database_url: str
) -> None:
    settings = api_settings(temporal_env, task_queue, database_url, auth="on", bootstrap_admin_key=BOOTSTRAP)
    async with running_api(settings) as api:
        admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
        made = await api.post("/api/v1/api-keys", json={"name": "v", "role": "viewer"}, headers=admin)
        viewer = {"Authorization": f"Bearer {made.json()['key']}"}
        document = five_steps(_name("guarded"))
        document["steps"][1]["with"] = {"duration": "1h"}
        assert (await api.post("/api/v1/definitions", json=document, headers=admin)).status_code == 201
        started = await api.post(f"/api/v1/definitions/{document['name']}/executions", json={}, headers=admin)
        execution_id = started.json()["execution_id"]

        anonymous = await api.get(f"/api/v1/executions/{execution_id}/events")
        assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
        assert (await api.get("/api/v1/stats", headers=viewer)).status_code == 200
        assert (await api.get(f"/api/v1/executions/{execution_id}/logs", headers=viewer)).status_code == 200

        # More open streams than the database pool has connections: every other request still gets one.
        readers = [
            asyncio.create_task(read_stream(api, execution_id, headers=viewer, stop_at="never"))
            for _ in range(25)
        ]
        for _ in range(200):
            if len(_watching()) == len(readers):
                break
            await asyncio.sleep(0.05)
        assert len(_watching()) == len(readers)
        listed = await asyncio.wait_for(api.get("/api/v1/definitions", headers=viewer), timeout=5)
        assert listed.status_code == 200
        await api.post(f"/api/v1/executions/{execution_id}/terminate", json={}, headers=admin)
        streams = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        assert all(s.types[0] == "started" and s.types[-1] == "cancelled" for s in streams)
