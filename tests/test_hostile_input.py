"""Hostile bodies at the edge: YAML alias bombs, lone surrogates, non-finite numbers, deep nesting.

Each is refused with a 400 naming where it is, before any side effect, on the real API with a real worker
and dev server; and what an older history already holds is still readable.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from temporalio.client import Client

from core import names
from core.settings import Settings
from core.signatures import sign_github
from core.untrusted import MAX_DEPTH, MAX_NODES, InputRefused, parse_json, parse_yaml
from workflows.messages import ExecutionInput

SURROGATE = b'"\\ud800"'
PRICE = {
    "name": "price",
    "input": {
        "type": "object",
        "required": ["sku", "price"],
        "properties": {"sku": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
    },
    "steps": [{"id": "echo", "type": "transform", "with": {"value": "{{ input }}"}}],
}


def alias_bomb(levels: int, fan: int = 9) -> str:
    """``levels`` anchors, each a list of ``fan`` aliases of the one before: fan**levels leaves."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(["name: bomb", "steps: []", *lines]) + "\n"


def refused(answer: httpx.Response, code: str, path: str | None = None) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error_code"] == code, body
    if path is not None:
        assert body["details"]["path"] == path, body
    return body


# --- the readers on their own ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [8, 9, 20])
def test_an_alias_bomb_is_refused_from_its_events(levels: int) -> None:
    with pytest.raises(InputRefused) as refusal:
        parse_yaml(alias_bomb(levels))
    assert refusal.value.error_code == "INPUT_TOO_LARGE"


def test_aliases_within_the_bound_are_kept() -> None:
    document = parse_yaml("base: &b {timeout: 5s}\nsteps: [{id: a, with: *b}, {id: b, with: *b}]\n")
    assert document["steps"][1]["with"] == {"timeout": "5s"}
    wide = "\n".join(["name: x", f"items: [{', '.join(['1'] * (MAX_NODES - 10))}]"])
    assert len(parse_yaml(wide)["items"]) == MAX_NODES - 10


@pytest.mark.parametrize(
    ("raw", "code", "path"),
    [
        (b'{"input": {"name": ' + SURROGATE + b"}}", "INVALID_STRING", "$.input.name"),
        (b'{"input": {"\\udfff": 1}}', "INVALID_STRING", "$.input.\\udfff"),
        (b'{"a": ["x", "\\ud83d"]}', "INVALID_STRING", "$.a[1]"),
        (b'{"a": "\xed\xa0\x80"}', "INVALID_JSON", None),  # the surrogate as raw bytes is not UTF-8
        (b'{"input": {"price": NaN}}', "INVALID_NUMBER", "$.input.price"),
        (b'{"input": {"price": -Infinity}}', "INVALID_NUMBER", "$.input.price"),
        (b'{"input": {"price": 1e400}}', "INVALID_NUMBER", "$.input.price"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "INPUT_TOO_DEEP", None),
        (b"[" * 100_000, "INPUT_TOO_DEEP", "$"),
        (b'{"n": ' + b"9" * 5000 + b"}", "INVALID_JSON", None),
    ],
)
def test_json_that_python_reads_but_json_is_not(raw: bytes, code: str, path: str | None) -> None:
    with pytest.raises(InputRefused) as refusal:
        parse_json(raw)
    assert refusal.value.error_code == code
    if path is not None:
        assert refusal.value.details["path"] == path


def test_good_json_passes_unchanged() -> None:
    raw = '{"emoji": "\\ud83d\\ude00", "e": 1e300, "n": -0.5, "deep": ' + "[" * 60 + "]" * 60 + "}"
    assert parse_json(raw) == json.loads(raw)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a: .nan\n", "INVALID_NUMBER"),
        ("a: -.inf\n", "INVALID_NUMBER"),
        ("a: !!binary aGk=\n", "INVALID_DOCUMENT"),
        ("a: !!set {x, y}\n", "INVALID_DOCUMENT"),
        ("&a [*a]\n", "INVALID_YAML"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", "INPUT_TOO_DEEP"),
        ("a: !!python/object:os.system {}\n", "INVALID_YAML"),
    ],
)
def test_yaml_that_json_cannot_hold(text: str, code: str) -> None:
    with pytest.raises(InputRefused) as refusal:
        parse_yaml(text)
    assert refusal.value.error_code == code


# --- through the API ------------------------------------------------------------------------------------


async def test_the_alias_bomb_is_refused_while_health_answers(api: httpx.AsyncClient) -> None:
    """The reproduction: 8 and 9 levels of 9 aliases to /definitions/validate, as a viewer may send."""
    health_answers: list[int] = []
    done = asyncio.Event()

    async def keep_asking() -> None:
        while not done.is_set():
            health_answers.append((await api.get("/health", timeout=5)).status_code)
            await asyncio.sleep(0.01)

    asker = asyncio.create_task(keep_asking())
    try:
        for levels in (8, 9):
            answer = await api.post(
                "/api/v1/definitions/validate",
                content=alias_bomb(levels),
                headers={"content-type": "application/yaml"},
                timeout=10,  # on main the 9-level bomb never answered
            )
            refused(answer, "INPUT_TOO_LARGE")
    finally:
        done.set()
        await asker
    assert health_answers and set(health_answers) == {200}


async def test_deep_and_large_definitions_are_refused(api: httpx.AsyncClient) -> None:
    deep = "name: deep\nsteps: " + "[" * 200 + "]" * 200 + "\n"
    answer = await api.post("/api/v1/definitions", content=deep, headers={"content-type": "application/yaml"})
    refused(answer, "INPUT_TOO_DEEP")
    nan = await api.post(
        "/api/v1/definitions/validate",
        content="name: n\nsteps: [{id: a, type: delay, with: {duration: .inf}}]\n",
        headers={"content-type": "application/yaml"},
    )
    refused(nan, "INVALID_NUMBER", "$.steps[0].with.duration")
    assert (await api.get("/api/v1/definitions/deep")).status_code == 404


async def _json_routes(api: httpx.AsyncClient) -> list[tuple[str, str]]:
    schema = (await api.get("/openapi.json")).json()
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return routes


async def test_every_json_route_refuses_surrogates_and_non_finite_numbers(api: httpx.AsyncClient) -> None:
    routes = await _json_routes(api)
    assert len(routes) > 20  # the whole API, not a handful
    for method, path in routes:
        for raw, code in (
            (b'{"name": ' + SURROGATE + b"}", "INVALID_STRING"),
            (b'{"n": NaN}', "INVALID_NUMBER"),
        ):
            answer = await api.request(
                method, path, content=raw, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400, (method, path, answer.text)
            assert answer.json()["error_code"] == code, (method, path, answer.text)


async def test_a_surrogate_or_infinity_in_an_input_starts_nothing(
    api: httpx.AsyncClient, client: Client
) -> None:
    assert (await api.post("/api/v1/definitions", json=PRICE)).status_code == 201
    run_id = uuid.uuid4().hex
    bodies = [
        (
            b'{"id": "' + run_id.encode() + b'", "input": {"sku": ' + SURROGATE + b', "price": 1}}',
            "$.input.sku",
        ),
        (b'{"id": "' + run_id.encode() + b'", "input": {"sku": "a", "price": Infinity}}', "$.input.price"),
        (b'{"id": "' + run_id.encode() + b'", "input": {"sku": "a", "price": 1e400}}', "$.input.price"),
    ]
    for raw, path in bodies:
        answer = await api.post(
            "/api/v1/definitions/price/executions", content=raw, headers={"content-type": "application/json"}
        )
        body = refused(answer, "INVALID_NUMBER" if "price" in path else "INVALID_STRING", path)
        assert path in body["message"]
    started = [w.id async for w in client.list_workflows(f"WorkflowId STARTS_WITH 'price/{run_id}'")]
    assert started == []
    assert (await api.get(f"/api/v1/executions/price/{run_id}")).status_code == 404
    # Text with astral characters (a valid surrogate pair in the escape) is text.
    good = await api.post(
        "/api/v1/definitions/price/executions",
        content=b'{"input": {"sku": "\\ud83d\\udce6", "price": 1}, "wait": 20}',
        headers={"content-type": "application/json"},
    )
    assert good.status_code == 201, good.text
    assert good.json()["output"] == {"sku": "\U0001f4e6", "price": 1}


async def test_a_signed_webhook_with_a_surrogate_is_refused_before_it_starts(
    api: httpx.AsyncClient, client: Client
) -> None:
    assert (await api.post("/api/v1/definitions", json=PRICE)).status_code == 201
    secret = "hook-secret-0123456789"
    hook = (
        await api.post(
            "/api/v1/definitions/price/triggers",
            json={"type": "webhook", "config": {"scheme": "github", "secret": secret}},
        )
    ).json()
    form = "payload=" + quote('{"sku": "\\ud800", "price": 2}')
    # GitHub's form encoding carries the JSON in a field, which the webhook reader parses itself.
    for body, content_type in (
        (b'{"sku": ' + SURROGATE + b', "price": 2}', "application/json"),
        (form.encode(), "application/x-www-form-urlencoded"),
    ):
        headers = {
            "content-type": content_type,
            "X-Hub-Signature-256": sign_github(body, secret),
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": uuid.uuid4().hex,
        }
        answer = await api.post(hook["url"], content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["details"]["path"] == "$.sku", answer.text
    started = [
        w.id async for w in client.list_workflows(f"WorkflowId STARTS_WITH 'price/hook-{hook['id']}-'")
    ]
    assert started == []


async def test_an_entity_with_a_surrogate_is_not_created(api: httpx.AsyncClient) -> None:
    before = (await api.get("/api/v1/entities/task")).json()
    answer = await api.post(
        "/api/v1/entities/task",
        content=b'{"title": ' + SURROGATE + b', "task_type": "general"}',
        headers={"content-type": "application/json"},
    )
    refused(answer, "INVALID_STRING", "$.title")
    assert (await api.get("/api/v1/entities/task")).json() == before


async def test_values_an_older_history_holds_are_readable(
    api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    """Executions started before the edge refused them (here: straight through Temporal) still read."""
    assert (await api.post("/api/v1/definitions", json=PRICE)).status_code == 201
    document = (await api.get("/api/v1/definitions/price")).json()["document"]
    execution_id = f"price/{uuid.uuid4().hex}"
    handle = await client.start_workflow(
        names.DEFINITION_WORKFLOW,
        ExecutionInput(definition=document, name="price", version=1, input={"sku": "a\ud800b", "price": 1}),
        id=execution_id,
        task_queue=settings.task_queue,
    )
    assert (await handle.result())["state"] == "COMPLETED"
    view = await api.get(f"/api/v1/executions/{execution_id}")
    assert view.status_code == 200, view.text
    assert view.json()["output"] == {"sku": "a\ufffdb", "price": 1}
    for suffix in ("/history", "/logs"):
        assert (await api.get(f"/api/v1/executions/{execution_id}{suffix}")).status_code == 200
    listed = await api.get("/api/v1/executions", params={"definition": "price"})
    assert listed.status_code == 200, listed.text


def test_an_alias_of_a_long_string_counts_its_characters() -> None:
    """Few nodes, gigabytes of text: 1,000 aliases of a list of 100 aliases of one 100 KB string."""
    text = "\n".join(
        [
            "name: bomb",
            "s: &s " + "x" * 100_000,
            "l: &l [" + ", ".join(["*s"] * 100) + "]",
            "b: [" + ", ".join(["*l"] * 1000) + "]",
        ]
    )
    with pytest.raises(InputRefused) as refusal:
        parse_yaml(text)
    assert refusal.value.error_code == "INPUT_TOO_LARGE"
    assert "characters" in refusal.value.message


async def test_two_content_types_are_refused(api: httpx.AsyncClient) -> None:
    """Starlette reads the first Content-Type, a dict of the headers the last: neither may slip a body by."""
    for types in (("application/json", "text/plain"), ("text/plain", "application/json")):
        answer = await api.post(
            "/api/v1/entities/task",
            content=b'{"title": ' + SURROGATE + b', "task_type": "general"}',
            headers=[("content-type", types[0]), ("content-type", types[1])],
        )
        refused(answer, "AMBIGUOUS_CONTENT_TYPE")
