"""Webhook triggers through the real API on the real dev server: signatures, mapping, limits, exactly-once."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.db import create_engine
from core.signatures import sign_github, sign_standard
from tests.conftest import api_settings
from tests.support.api import running_api

ORDER = {
    "name": "order-hook",
    "input": {
        "type": "object",
        "required": ["order", "sender"],
        "properties": {"order": {"type": "integer"}, "sender": {"type": "string"}, "ref": {"type": "string"}},
    },
    "steps": [
        {"id": "pause", "type": "delay", "with": {"duration": "200ms"}},
        {"id": "echo", "type": "transform", "with": {"value": "{{ input }}"}},
    ],
}
MAPPING = {
    "order": "{{ body.order.id }}",
    "sender": "{{ headers['x-github-event'] }}",
    "ref": "{{ query.ref | default('none') }}",
}
SECRET = "hook-secret-0123456789"


async def _webhook(api: httpx.AsyncClient, **config: object) -> dict[str, str]:
    saved = await api.post("/api/v1/definitions", json=ORDER)
    assert saved.status_code in (200, 201), saved.text
    created = await api.post(
        "/api/v1/definitions/order-hook/triggers", json={"type": "webhook", "config": config}
    )
    assert created.status_code == 201, created.text
    body: dict[str, str] = created.json()
    assert body["url"] == f"/hooks/{body['id']}"
    return body


def _github(body: bytes, secret: str = SECRET, delivery: str | None = None) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "X-Hub-Signature-256": sign_github(body, secret),
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }


async def _runs(client: Client, trigger_id: str) -> list[str]:
    query = f"WorkflowId STARTS_WITH 'order-hook/hook-{trigger_id}-'"
    return [w.id async for w in client.list_workflows(query)]


async def test_signed_delivery_starts_the_mapped_execution(api: httpx.AsyncClient, client: Client) -> None:
    hook = await _webhook(api, scheme="github", secret=SECRET, input_mapping=MAPPING)
    assert hook["secret"] is None  # given, so not echoed
    body = json.dumps({"order": {"id": 42}, "noise": "x" * 100}).encode()
    answer = await api.post(f"{hook['url']}?ref=r-1", content=body, headers=_github(body, delivery="d-1"))
    assert answer.status_code == 202, answer.text
    execution_id = answer.json()["execution_id"]
    assert execution_id == f"order-hook/hook-{hook['id']}-d-1"
    result = await client.get_workflow_handle(execution_id).result()
    assert result["output"] == {"order": 42, "sender": "push", "ref": "r-1"}
    view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert view["state"] == "COMPLETED"
    shown = (await api.get(f"/api/v1/triggers/{hook['id']}")).json()
    assert SECRET not in json.dumps(shown) and shown["secrets"][0]["hint"] == "…6789"


async def test_default_input_is_the_body_and_bad_requests_are_4xx(
    api: httpx.AsyncClient, client: Client
) -> None:
    hook = await _webhook(api, scheme="standard")
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    body = json.dumps({"order": 7, "sender": "std"}).encode()
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard(body, secret, "msg_1", now),
    }
    answer = await api.post(hook["url"], content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    result = await client.get_workflow_handle(answer.json()["execution_id"]).result()
    assert result["output"] == {"order": 7, "sender": "std"}

    stale = {**headers, "webhook-timestamp": str(now - 3600)}
    stale["webhook-signature"] = sign_standard(body, secret, "msg_1", now - 3600)
    for bad in (
        {**headers, "webhook-signature": "v1,AAAA"},
        stale,
        {"content-type": "application/json"},
    ):
        rejected = await api.post(hook["url"], content=body, headers=bad)
        assert rejected.status_code == 401, rejected.text
        assert rejected.json()["error_code"] == "SIGNATURE_INVALID"
    # Signed but not valid JSON, or not the definition's input: 4xx, never 5xx.
    for payload in (b"{not json", b"[" * 5000 + b"]" * 5000, json.dumps({"order": "x"}).encode()):
        msg = f"msg_{uuid.uuid4().hex}"
        signed = {**headers, "webhook-id": msg, "webhook-signature": sign_standard(payload, secret, msg, now)}
        answer = await api.post(hook["url"], content=payload, headers=signed)
        assert answer.status_code in (400, 422), answer.text


async def test_unknown_paused_and_too_large(api: httpx.AsyncClient) -> None:
    hook = await _webhook(api, scheme="github", secret=SECRET)
    body = b'{"order": {"id": 1}}'
    assert (await api.post("/hooks/nope", content=body, headers=_github(body))).status_code == 404
    assert (await api.post("/hooks/" + "x" * 300, content=body, headers=_github(body))).status_code == 404
    assert (await api.post(f"/api/v1/triggers/{hook['id']}/pause")).status_code == 200
    paused = await api.post(hook["url"], content=body, headers=_github(body))
    assert paused.status_code == 404
    assert (await api.post(f"/api/v1/triggers/{hook['id']}/resume")).status_code == 200
    big = b'{"x": "' + b"a" * 1_000_100 + b'"}'
    too_large = await api.post(hook["url"], content=big, headers=_github(big))
    assert too_large.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"a" * 100_000

    streamed = await api.post(hook["url"], content=chunks(), headers=_github(b""))
    assert streamed.status_code == 413
    none_without_choice = await api.post(
        "/api/v1/definitions/order-hook/triggers", json={"type": "webhook", "config": {}}
    )
    assert none_without_choice.status_code == 422


async def test_secret_rotation_keeps_two_active(api: httpx.AsyncClient) -> None:
    hook = await _webhook(api, scheme="github", secret=SECRET, input_mapping=MAPPING)
    new = "rotated-secret-abcdefgh"
    patched = await api.patch(f"/api/v1/triggers/{hook['id']}", json={"secret": new})
    assert patched.status_code == 200, patched.text
    assert [s["active"] for s in patched.json()["secrets"]] == [True, True]
    for secret in (SECRET, new):
        body = json.dumps({"order": {"id": 1}, "by": secret}).encode()
        answer = await api.post(hook["url"], content=body, headers=_github(body, secret))
        assert answer.status_code == 202, answer.text
    retired = await api.patch(f"/api/v1/triggers/{hook['id']}", json={"retire_old_secret": True})
    assert len(retired.json()["secrets"]) == 1
    body = b'{"order": {"id": 2}}'
    assert (await api.post(hook["url"], content=body, headers=_github(body, SECRET))).status_code == 401
    assert (await api.post(hook["url"], content=body, headers=_github(body, new))).status_code == 202


async def test_secret_rules_are_the_readmes(api: httpx.AsyncClient) -> None:
    """8 to 512 characters; standard: base64 of a key, whsec_ optional; none: no secret; generated forms."""
    assert (await api.post("/api/v1/definitions", json=ORDER)).status_code in (200, 201)

    async def create(scheme: str, secret: str | None) -> httpx.Response:
        config = {"scheme": scheme} if secret is None else {"scheme": scheme, "secret": secret}
        return await api.post(
            "/api/v1/definitions/order-hook/triggers", json={"type": "webhook", "config": config}
        )

    for scheme, secret in (
        ("github", "x" * 7),
        ("hmac", "x" * 513),
        ("standard", "whsec_not base64!"),
        ("standard", "whsec_"),
        ("none", "x" * 16),
    ):
        refused = await create(scheme, secret)
        assert refused.status_code == 422, (scheme, secret, refused.text)
        assert refused.json()["details"].get("field") == "secret", refused.text
    for scheme, secret in (
        ("github", "x" * 8),
        ("stripe", "x" * 512),
        ("standard", "whsec_" + base64.b64encode(b"k" * 24).decode()),
        ("standard", base64.b64encode(b"key-bytes").decode()),
    ):
        assert (await create(scheme, secret)).status_code == 201, (scheme, secret)
    standard = (await create("standard", None)).json()["secret"]
    assert standard.startswith("whsec_") and len(base64.b64decode(standard.removeprefix("whsec_"))) == 24
    generated = (await create("github", None)).json()
    assert len(generated["secret"]) == 43
    rotated = await api.patch(f"/api/v1/triggers/{generated['id']}", json={"secret": "short"})
    assert rotated.status_code == 422 and rotated.json()["error_code"] == "SECRET_INVALID"


async def _exactly_once(api: httpx.AsyncClient, client: Client) -> None:
    hook = await _webhook(api, scheme="github", secret=SECRET, input_mapping=MAPPING)
    body = b'{"order": {"id": 9}}'
    headers = _github(body, delivery=f"dup-{uuid.uuid4().hex}")
    answers = await asyncio.gather(*(api.post(hook["url"], content=body, headers=headers) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 9 + [202], [a.text for a in answers]
    ids = {a.json()["execution_id"] for a in answers}
    assert len(ids) == 1
    (execution_id,) = ids
    await client.get_workflow_handle(execution_id).result()
    again = await api.post(hook["url"], content=body, headers=headers)
    assert again.status_code == 200 and again.json()["execution_id"] == execution_id
    # Without a delivery id the body's hash is the key.
    bare = {k: v for k, v in headers.items() if k != "X-GitHub-Delivery"}
    first, second = [await api.post(hook["url"], content=body, headers=bare) for _ in range(2)]
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["execution_id"] == second.json()["execution_id"] != execution_id
    assert sorted(await _runs(client, hook["id"])) == sorted([execution_id, first.json()["execution_id"]])


async def test_same_delivery_ten_times_is_one_execution(api: httpx.AsyncClient, client: Client) -> None:
    await _exactly_once(api, client)


async def test_dedupe_survives_on_both_stores(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, database_url: str, client: Client
) -> None:
    settings = api_settings(temporal_env, task_queue, database_url)
    async with running_api(settings) as api:
        await _exactly_once(api, client)
        hook = (await api.get("/api/v1/triggers?definition=order-hook")).json()[0]
        body = b'{"order": {"id": 5}}'
        headers = _github(body, delivery="after-retention")
        first = await api.post(hook["url"], content=body, headers=headers)
        assert first.status_code == 202
    # Temporal's retention and the dedupe TTL have both passed: only the executions record remains.
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE deliveries SET expires_at = created_at"))
    await engine.dispose()
    async with running_api(settings) as api:
        again = await api.post(hook["url"], content=body, headers=headers)
        assert again.status_code == 200 and again.json()["execution_id"] == first.json()["execution_id"]


@pytest.mark.parametrize("scheme", ["stripe", "hmac"])
async def test_other_schemes_end_to_end(
    api: httpx.AsyncClient, client: Client, scheme: str, tmp_path: Path
) -> None:
    from core.signatures import HmacOptions, sign_hmac, sign_stripe

    hook = (
        await _webhook(api, scheme=scheme, secret=SECRET, id_header="X-Request-Id", timestamp_header="X-Ts")
        if scheme == "hmac"
        else await _webhook(api, scheme=scheme, secret=SECRET)
    )
    body = json.dumps({"id": "evt_123", "order": 3, "sender": scheme}).encode()
    now = int(time.time())
    if scheme == "stripe":
        headers = {"content-type": "application/json", "Stripe-Signature": sign_stripe(body, SECRET, now)}
        expected_id = "evt_123"
    else:
        options = HmacOptions(timestamp_header="X-Ts")
        headers = {
            "X-Signature": sign_hmac(body, SECRET, options, now),
            "X-Ts": str(now),
            "X-Request-Id": "r/1",
        }
        expected_id = None
    answer = await api.post(hook["url"], content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    if expected_id:
        assert answer.json()["delivery_id"] == expected_id
    else:
        assert answer.json()["delivery_id"].startswith("id-")  # unsafe characters: hashed
    result = await client.get_workflow_handle(answer.json()["execution_id"]).result()
    assert result["output"]["sender"] == scheme


HOLD = {
    "name": "hold-hook",
    "steps": [{"id": "hold", "type": "delay", "with": {"duration": "1h"}}],
}


async def test_a_redelivery_whose_execution_exists_is_a_duplicate(
    api: httpx.AsyncClient, client: Client, tmp_path: Path
) -> None:
    """The API died after Temporal started a delivery's execution and before the store recorded it: the
    sender's redelivery finds the execution (running, then closed) and says it is a duplicate."""
    assert (await api.post("/api/v1/definitions", json=HOLD)).status_code == 201
    created = await api.post(
        "/api/v1/definitions/hold-hook/triggers",
        json={"type": "webhook", "config": {"scheme": "github", "secret": SECRET}},
    )
    hook = created.json()
    body = b'{"order": 1}'
    headers = _github(body, delivery="crash-1")
    first = await api.post(hook["url"], content=body, headers=headers)
    assert first.status_code == 202, first.text
    execution_id = first.json()["execution_id"]

    async def forget() -> None:
        # What a crash between Temporal's start and the store's commit leaves: no record of either.
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/api.db")
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM deliveries"))
            await connection.execute(text("DELETE FROM executions"))
        await engine.dispose()

    await forget()
    again = await api.post(hook["url"], content=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"execution_id": execution_id, "delivery_id": "crash-1", "duplicate": True}

    await client.get_workflow_handle(execution_id).terminate("closed, within Temporal's retention")
    await forget()
    late = await api.post(hook["url"], content=body, headers=headers)
    assert late.status_code == 200, late.text
    assert late.json() == {"execution_id": execution_id, "delivery_id": "crash-1", "duplicate": True}
    assert [w.id async for w in client.list_workflows(f"WorkflowId = '{execution_id}'")] == [execution_id]
