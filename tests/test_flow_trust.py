"""Flow steps under hostile input, on the real dev server and API: a start with ``wait`` answers when its
execution parks, a cancelled wait records who cancelled it, closed executions leave no step ``pending``,
``wait`` timeouts are more than 0s and a timed-out wait parks rather than waiting again, and templated
values that validation cannot see fail their step with a clear error."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from core import names
from tests.support.outcome import completes, fails, failure_of, statuses
from tests.support.run import start
from tests.support.target import Target
from workflows.messages import RetryRequest

PARK = {"suspend": True, "retries": []}


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": f"trust-{uuid.uuid4().hex[:8]}", "steps": list(steps), **fields}


async def _create(api: httpx.AsyncClient, document: dict[str, Any]) -> None:
    answer = await api.post("/api/v1/definitions", json=document)
    assert answer.status_code == 201, answer.text


async def _view_when(
    api: httpx.AsyncClient, execution_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(400):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if done(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never got there: {view}")


async def _until_state(handle: WorkflowHandle[Any, Any], state: str) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    for _ in range(400):
        snapshot = await handle.query(names.QUERY_DESCRIBE)
        if snapshot["state"] == state:
            return snapshot
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never reached {state}: {snapshot['state']}")


# -- a start with wait ---------------------------------------------------------------------------------------


async def test_a_waiting_start_answers_when_the_execution_parks(api: httpx.AsyncClient) -> None:
    document = definition(
        {"id": "ok", "type": "transform", "with": {"value": 1}},
        {"id": "broken", "type": "transform", "with": {"value": "{{ input.missing.deeper }}"}},
    )
    await _create(api, document)
    wait = 25.0  # below the test client's 30 s timeout
    began = time.monotonic()
    answer = await api.post(f"/api/v1/definitions/{document['name']}/executions", json={"wait": wait})
    elapsed = time.monotonic() - began
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["state"] == "SUSPENDED"
    assert body["error"]["code"] == "ExpressionFailed" and body["error"]["step"] == "broken"
    assert body["output"] is None
    assert elapsed < wait / 2, "it answered when the execution parked, not when the wait ran out"


async def test_a_waiting_start_still_answers_with_the_result_or_the_failure(api: httpx.AsyncClient) -> None:
    done = definition({"id": "a", "type": "transform", "with": {"value": 7}})
    await _create(api, done)
    body = (await api.post(f"/api/v1/definitions/{done['name']}/executions", json={"wait": 20})).json()
    assert (body["state"], body["output"], body["error"]) == ("COMPLETED", 7, None)

    stopped = definition({"id": "stop", "type": "fail", "with": {"error_code": "NOPE"}})
    await _create(api, stopped)
    body = (await api.post(f"/api/v1/definitions/{stopped['name']}/executions", json={"wait": 20})).json()
    assert body["state"] == "FAILED" and body["error"]["code"] == "NOPE"


async def test_a_wait_that_runs_out_answers_with_the_state_and_error_so_far(
    api: httpx.AsyncClient, target: Target
) -> None:
    # A system error, retried as a whole execution a minute later: RETRYING when the start's wait runs out.
    document = definition(
        {
            "id": "call",
            "type": "http_request",
            "retry": {"max_attempts": 1},
            "with": {"url": f"{target.url}/status/503"},
        },
        failure={"suspend": True, "retries": [60]},
    )
    await _create(api, document)
    body = (await api.post(f"/api/v1/definitions/{document['name']}/executions", json={"wait": 5})).json()
    try:
        assert body["state"] == "RETRYING"
        assert body["error"]["code"] == "HttpServerError" and body["error"]["step"] == "call"
    finally:
        await api.post(f"/api/v1/executions/{body['execution_id']}/terminate")


async def test_repeated_waiting_starts_leave_nothing_in_flight(api: httpx.AsyncClient) -> None:
    """Temporal holds at most 10 in-flight updates per execution (the dev server's default): starts with
    ``wait`` that run out on a long-running execution must not each leave one behind, or an operator's
    update is refused once a dozen timed-out repeats of the same start went by."""
    document = definition({"id": "approval", "type": "wait", "with": {"event": "approve"}})
    await _create(api, document)
    url = f"/api/v1/definitions/{document['name']}/executions"
    body = {"id": "again", "wait": 1}
    first = (await api.post(url, json=body)).json()
    assert first["state"] == "WAITING", first
    answers = await asyncio.gather(*(api.post(url, json=body) for _ in range(12)))
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    assert {a.json()["state"] for a in answers} == {"WAITING"}
    for _ in range(3):  # and one after the other, as a client retrying a timed-out start does
        assert (await api.post(url, json=body)).json()["state"] == "WAITING"

    decided = await api.post(
        f"/api/v1/executions/{first['execution_id']}/updates/approve", json={"payload": 1}
    )
    assert decided.status_code == 200, decided.text
    view = await _view_when(api, first["execution_id"], lambda view: view["closed_at"] is not None)
    assert (view["state"], view["output"]) == ("COMPLETED", 1)


# -- cancelling a waiting execution ---------------------------------------------------------------------


async def test_cancelling_a_waiting_execution_records_the_cancel_and_its_actor(
    api: httpx.AsyncClient,
) -> None:
    document = definition(
        {"id": "approval", "type": "wait", "with": {"event": "approve"}},
        on_error=[{"id": "tidy", "type": "set", "with": {"tidied": True}}],
    )
    await _create(api, document)
    started = (await api.post(f"/api/v1/definitions/{document['name']}/executions", json={})).json()
    execution_id = started["execution_id"]
    await _view_when(api, execution_id, lambda view: view["state"] == "WAITING")
    assert (await api.post(f"/api/v1/executions/{execution_id}/cancel")).status_code == 202
    view = await _view_when(api, execution_id, lambda view: view["closed_at"] is not None)
    assert view["state"] == "CANCELLED"
    assert {s["id"]: s["status"] for s in view["steps"]} == {"approval": "cancelled", "tidy": "completed"}
    history = (await api.get(f"/api/v1/executions/{execution_id}/history")).json()
    assert [(t["from_state"], t["to_state"]) for t in history[-2:]] == [
        ("PROCESSING", "WAITING"),
        ("WAITING", "CANCELLED"),
    ]
    cancel = history[-1]
    assert cancel["actor"] == "developer (auth off)"
    assert cancel["reason"] == "cancellation requested"
    assert not any("resolved" in t["reason"] for t in history)


async def test_a_wait_cancelled_by_a_failing_sibling_says_so(client: Client, worker: Worker) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "both",
                "type": "parallel",
                "branches": {
                    "waits": [{"id": "approval", "type": "wait", "with": {"event": "approve"}}],
                    "fails": [
                        {"id": "nap", "type": "delay", "with": {"duration": "200ms"}},
                        {"id": "stop", "type": "fail"},
                    ],
                },
            }
        ),
    )
    failure = await failure_of(handle)
    assert failure.statuses()["approval"] == "cancelled"
    reasons = [t["reason"] for t in await handle.query(names.QUERY_HISTORY)]
    assert "the wait for approve was cancelled" in reasons
    assert "approve resolved" not in reasons


# -- closed executions leave nothing pending ------------------------------------------------------------


async def test_a_closed_execution_leaves_no_step_pending(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "route",
                "type": "switch",
                "cases": [
                    {"when": False, "steps": [{"id": "never", "type": "set", "with": {"x": 1}}]},
                    {"when": True, "steps": [{"id": "done", "type": "succeed", "with": {"output": 1}}]},
                ],
                "default": [{"id": "fallback", "type": "set", "with": {"x": 2}}],
            },
            {"id": "after", "type": "set", "with": {"x": 3}},
            on_error=[{"id": "tidy", "type": "set", "with": {"x": 4}}],
        ),
    )
    assert statuses(result) == {
        "route": "completed",
        "never": "skipped",
        "done": "completed",
        "fallback": "skipped",
        "after": "skipped",
        "tidy": "skipped",
    }


async def test_a_failed_execution_skips_what_never_ran(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {"id": "stop", "type": "fail"},
            {"id": "later", "type": "set", "with": {"x": 1}},
            on_error=[{"id": "tidy", "type": "set", "with": {"x": 2}}],
        ),
    )
    assert failure.statuses() == {"stop": "failed", "later": "skipped", "tidy": "completed"}


# -- wait timeouts -------------------------------------------------------------------------------------------


async def test_a_wait_timeout_rendered_to_zero_fails_the_step_and_parks(
    client: Client, worker: Worker
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "approval", "type": "wait", "with": {"event": "go", "timeout": "{{ input.t }}"}},
            failure={"suspend": True, "retries": [60]},
        ),
        {"t": "0s"},
    )
    parked = await _until_state(handle, "SUSPENDED")
    assert parked["error"]["code"] == "ConfigInvalid" and parked["error"]["step"] == "approval"
    assert "more than 0s" in parked["error"]["message"]
    assert "RETRYING" not in [t["to_state"] for t in await handle.query(names.QUERY_HISTORY)]
    await handle.terminate()


async def test_a_timed_out_wait_parks_at_once_instead_of_waiting_again(
    client: Client, worker: Worker
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "approval", "type": "wait", "with": {"event": "go", "timeout": "300ms"}},
            failure={"suspend": True, "retries": [60, 120]},
        ),
    )
    parked = await _until_state(handle, "SUSPENDED")
    assert parked["error"]["code"] == "WaitTimeout"
    history = await handle.query(names.QUERY_HISTORY)
    assert [t["to_state"] for t in history] == [
        "QUEUED",
        "PROCESSING",
        "WAITING",
        "PROCESSING",
        "FAILED",
        "SUSPENDED",
    ]
    assert history[3]["reason"] == "no go before the timeout"
    # An operator's retry waits again, and this time the event comes.
    await handle.execute_update(names.UPDATE_RETRY, RetryRequest(actor="ada"))
    await _until_state(handle, "WAITING")
    await handle.signal("go", {"ok": True})
    assert (await handle.result()).output == {"ok": True}


# -- templated values validation cannot see fail their step clearly ------------------------------------------


@pytest.mark.parametrize(
    ("step", "code", "words"),
    [
        (
            {"id": "call", "type": "http_request", "with": {"url": "{{ input.value }}"}},
            "OutboundBlocked",
            "http or https, not 'file'",
        ),
        (
            {
                "id": "call",
                "type": "notification",
                "with": {"channel": "webhook", "url": "{{ input.value }}"},
            },
            "OutboundBlocked",
            "http or https, not 'file'",
        ),
        ({"id": "nap", "type": "delay", "with": {"until": "{{ input.value }}"}}, "ConfigInvalid", "ISO 8601"),
    ],
    ids=["http_request-url", "webhook-url", "delay-until"],
)
async def test_a_template_rendering_a_refused_value_fails_its_step(
    client: Client, worker: Worker, step: dict[str, Any], code: str, words: str
) -> None:
    value = "tomorrow" if step["type"] == "delay" else "file:///etc/passwd"
    failure = await fails(client, worker.task_queue, definition(step), {"value": value})
    assert failure.error["code"] == code and failure.error["step"] == step["id"]
    assert words in failure.error["message"]


# -- validation of literal values -----------------------------------------------------------------------

_VALID_SQL = {"connector": "db", "sql": "select * from t where id = :id", "params": {"id": 1}}


@pytest.mark.parametrize(
    ("step", "path", "words"),
    [
        ({"type": "delay", "with": {"duration": "999999999999d"}}, "with.duration", "ten years"),
        ({"type": "delay", "with": {"until": "tomorrow"}}, "with.until", "ISO 8601"),
        ({"type": "http_request", "with": {"url": "file:///etc/passwd"}}, "with.url", "http:// or https://"),
        ({"type": "api_call", "with": {"url": "ftp://{{ input.host }}/x"}}, "with.url", "'ftp'"),
        ({"type": "http_request", "with": {"url": "https:///no-host"}}, "with.url", "with a host"),
        (
            {"type": "notification", "with": {"channel": "webhook", "url": "file:///etc/passwd"}},
            "with.url",
            "http:// or https://",
        ),
        (
            {
                "type": "notification",
                "with": {"channel": "slack", "webhook_url": "gopher://x", "message": "m"},
            },
            "with.webhook_url",
            "'gopher'",
        ),
        (
            {"type": "data_fetch", "with": {"connector": "api", "path": "file:///etc/passwd"}},
            "with.path",
            "not a URL",
        ),
        (
            {"type": "database_query", "with": {**_VALID_SQL, "sql": "select 1; drop table t"}},
            "with.sql",
            "exactly one SQL statement; found 2",
        ),
        (
            {"type": "data_fetch", "with": {"connector": "db", "query": "select 1; select 2"}},
            "with.query",
            "exactly one SQL statement",
        ),
        (
            {"type": "database_query", "with": {**_VALID_SQL, "sql": "selec * fro t"}},
            "with.sql",
            "only SELECT, INSERT, UPDATE and DELETE",
        ),
        ({"type": "database_query", "with": {**_VALID_SQL, "sql": "select ("}}, "with.sql", "not be parsed"),
        (
            {"type": "data_fetch", "with": {"connector": "db", "sql": "delete from t"}},
            "with.sql",
            "data_fetch only reads",
        ),
        ({"type": "wait", "with": {"event": "go", "timeout": "0s"}}, "with.timeout", "more than 0s"),
        ({"type": "transform", "with": {"value": 1}, "timeout": 0}, "timeout", "more than 0s"),
        ({"type": "transform", "with": {"value": 1}, "timeout": "999999999999d"}, "timeout", "ten years"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_validation_refuses_literal_values_that_cannot_run(
    api: httpx.AsyncClient, step: dict[str, Any], path: str, words: str
) -> None:
    document = definition({"id": "s", **step})
    report = (await api.post("/api/v1/definitions/validate", json=document)).json()
    assert report["valid"] is False
    [problem] = report["problems"]
    assert problem["path"] == f"$.steps[0].{path}"
    assert words in problem["message"]
    refused = await api.post("/api/v1/definitions", json=document)
    assert refused.status_code == 422 and refused.json()["error_code"] == "DEFINITION_INVALID"


@pytest.mark.parametrize(
    "step",
    [
        {"type": "delay", "with": {"duration": "3650d"}},
        {"type": "delay", "with": {"duration": 0}},
        {"type": "delay", "with": {"until": "2030-01-31T09:00:00Z"}},
        {"type": "delay", "with": {"until": "{{ input.when }}"}},
        {"type": "http_request", "with": {"url": "{{ input.url }}"}},
        {"type": "http_request", "with": {"url": "HTTPS://{{ input.host }}/x"}},
        {
            "type": "notification",
            "with": {"channel": "slack", "webhook_url": "{{ secrets.SLACK }}", "message": "m"},
        },
        {"type": "database_query", "with": {**_VALID_SQL, "sql": "select ';' as semi;"}},
        {"type": "data_fetch", "with": {"connector": "api", "path": "/v1/items"}},
        {"type": "wait", "with": {"event": "go", "timeout": "{{ input.t }}"}},
    ],
)
async def test_validation_still_takes_what_can_run(api: httpx.AsyncClient, step: dict[str, Any]) -> None:
    report = (await api.post("/api/v1/definitions/validate", json=definition({"id": "s", **step}))).json()
    assert report == {"valid": True, "problems": []}


async def test_a_snapshot_saved_before_a_check_still_runs(client: Client, worker: Worker) -> None:
    """Save-time checks do not reach executions of versions stored before them: the interpreter parses its
    snapshot without them (here a step timeout of 0, refused at save now, still means the default)."""
    document = definition({"id": "a", "type": "transform", "timeout": 0, "with": {"value": 5}})
    result = await completes(client, worker.task_queue, document)
    assert result.output == 5


# -- signals and updates by name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("signals", "lane_verdict"),
        ("signals", "bad name"),
        ("updates", "conveyor:settled"),
        ("updates", "x" * 65),
    ],
)
async def test_signals_and_updates_by_name_are_only_those_a_wait_can_take(
    api: httpx.AsyncClient, kind: str, name: str
) -> None:
    document = definition({"id": "approval", "type": "wait", "with": {"event": "approve"}})
    await _create(api, document)
    execution_id = (await api.post(f"/api/v1/definitions/{document['name']}/executions", json={})).json()[
        "execution_id"
    ]
    refused = await api.post(f"/api/v1/executions/{execution_id}/{kind}/{name}", json={"payload": {}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error_code"] == "INVALID_NAME" and refused.json()["details"] == {"field": "name"}
    sent = await api.post(f"/api/v1/executions/{execution_id}/signals/approve", json={"payload": {"ok": 1}})
    assert sent.status_code == 202
    view = await _view_when(api, execution_id, lambda view: view["closed_at"] is not None)
    assert view["state"] == "COMPLETED" and view["output"] == {"ok": 1}
