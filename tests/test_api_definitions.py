"""Definitions through the real API: versions, publish, diff, graph, validation errors, archive."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import yaml

HELLO = {
    "name": "hello",
    "input": {"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}},
    "steps": [{"id": "greet", "type": "transform", "with": {"value": "hello {{ input.who }}"}}],
}


async def test_create_version_publish_and_diff(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/definitions", json=HELLO)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "hello",
        "version": 1,
        "status": "published",
        "created": True,
        "active_version": 1,
    }

    same = await api.post("/api/v1/definitions", json=HELLO)
    assert same.status_code == 200
    assert same.json()["version"] == 1 and same.json()["created"] is False

    changed = {
        **HELLO,
        "steps": [
            *HELLO["steps"],
            {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
        ],
    }
    v2 = await api.post(
        "/api/v1/definitions", content=yaml.safe_dump(changed), headers={"content-type": "application/yaml"}
    )
    assert v2.status_code == 201, v2.text
    assert v2.json()["version"] == 2 and v2.json()["status"] == "draft" and v2.json()["active_version"] == 1

    current = (await api.get("/api/v1/definitions/hello")).json()
    assert current["version"] == 1 and current["latest_version"] == 2

    published = await api.post("/api/v1/definitions/hello/versions/2/publish")
    assert published.status_code == 200 and published.json()["active_version"] == 2
    versions = (await api.get("/api/v1/definitions/hello/versions")).json()
    assert [(v["version"], v["active"]) for v in versions] == [(1, False), (2, True)]

    diff = (await api.get("/api/v1/definitions/hello/versions/1/diff/2")).json()
    assert (
        diff["steps_added"] == ["shout"]
        and diff["steps_removed"] == []
        and "+- id: shout" in diff["unified"]
        and "-name" not in diff["unified"]
    )

    graph = await api.get("/api/v1/definitions/hello/graph?format=mermaid")
    assert graph.status_code == 200 and graph.text.startswith("flowchart TD")
    assert "s_greet --> s_shout" in graph.text

    listed = (await api.get("/api/v1/definitions")).json()
    assert [(d["name"], d["active_version"], d["latest_version"]) for d in listed] == [("hello", 2, 2)]


async def test_invalid_definition_is_422_with_paths_and_stores_nothing(api: httpx.AsyncClient) -> None:
    bad = {
        "name": "broken",
        "steps": [
            {"id": "a", "type": "nope"},
            {
                "id": "a",
                "type": "transform",
                "with": {"value": "{{ steps.zz.output"},
                "depends_on": ["ghost"],
            },
            {"id": "c", "type": "delay", "with": {"duration": "soon"}},
        ],
    }
    answer = await api.post("/api/v1/definitions", json=bad)
    assert answer.status_code == 422
    body = answer.json()
    assert body["error_code"] == "DEFINITION_INVALID"
    paths = {p["path"] for p in body["details"]["problems"]}
    assert {
        "$.steps[0].type",
        "$.steps[1].id",
        "$.steps[1].depends_on[0]",
        "$.steps[1].with.value",
        "$.steps[2].with.duration",
    } <= paths
    assert (await api.get("/api/v1/definitions/broken")).status_code == 404
    assert (await api.get("/api/v1/definitions")).json() == []

    report = (await api.post("/api/v1/definitions/validate", json=bad)).json()
    assert report["valid"] is False and len(report["problems"]) == len(body["details"]["problems"])
    assert (await api.post("/api/v1/definitions/validate", json=HELLO)).json() == {
        "valid": True,
        "problems": [],
    }


async def test_bad_bodies_are_clear_4xx(api: httpx.AsyncClient) -> None:
    not_json = await api.post(
        "/api/v1/definitions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["error_code"] == "INVALID_JSON"
    not_yaml = await api.post(
        "/api/v1/definitions", content=b"a: [", headers={"content-type": "application/yaml"}
    )
    assert not_yaml.status_code == 400 and not_yaml.json()["error_code"] == "INVALID_YAML"
    a_list = await api.post("/api/v1/definitions", json=[1, 2])
    assert a_list.status_code == 400 and a_list.json()["error_code"] == "INVALID_DOCUMENT"
    wrong_type = await api.post("/api/v1/definitions", content=b"x", headers={"content-type": "text/csv"})
    assert wrong_type.status_code == 415
    huge = await api.post(
        "/api/v1/definitions", content=b"x" * 2_000_000, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and huge.json()["error_code"] == "PAYLOAD_TOO_LARGE"
    missing = await api.get("/api/v1/definitions/nothing/versions/3")
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "DEFINITION_NOT_FOUND"
    assert (await api.post("/api/v1/definitions/nothing/versions/1/publish")).status_code == 404


async def test_archive_stops_new_executions(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/definitions", json=HELLO)
    archived = await api.delete("/api/v1/definitions/hello")
    assert archived.json() == {"name": "hello", "archived": True}
    assert (await api.get("/api/v1/definitions")).json() == []
    assert len((await api.get("/api/v1/definitions?include_archived=true")).json()) == 1
    start = await api.post("/api/v1/definitions/hello/executions", json={"input": {"who": "x"}})
    assert start.status_code == 409 and start.json()["error_code"] == "DEFINITION_ARCHIVED"


async def test_validate_refuses_hostile_templates_at_their_paths(api: httpx.AsyncClient) -> None:
    hostile = {
        "name": "hostile",
        "steps": [
            {"id": "mro", "type": "transform", "with": {"value": "{{ ''.__class__.__mro__ }}"}},
            {"id": "pad", "type": "transform", "with": {"value": "x{{ 'a'.ljust(300000000) }}"}},
            {
                "id": "nest",
                "type": "transform",
                "with": {"value": "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"},
            },
            {
                "id": "loops",
                "type": "transform",
                "with": {
                    "value": "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
                    "{% endfor %}{% endfor %}{% endfor %}"
                },
            },
        ],
    }
    answer = await api.post("/api/v1/definitions/validate", json=hostile)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["valid"] is False
    problems = {p["path"]: p["message"] for p in report["problems"]}
    assert "'__class__'" in problems["$.steps[0].with.value"]
    assert "300,000,000" in problems["$.steps[1].with.value"]
    assert "nested" in problems["$.steps[2].with.value"]
    assert "loops nested" in problems["$.steps[3].with.value"]
    saved = await api.post("/api/v1/definitions", json=hostile)
    assert saved.status_code == 422 and saved.json()["error_code"] == "DEFINITION_INVALID"


def _templated(*templates: str) -> dict[str, Any]:
    steps = [{"id": f"t{i}", "type": "transform", "with": {"value": t}} for i, t in enumerate(templates)]
    return {"name": "templated", "steps": steps}


async def test_a_document_holds_a_bounded_amount_of_template_text(api: httpx.AsyncClient) -> None:
    # Ten templates of 91,000 characters each: validating compiled all of them, 18 s of a viewer's request.
    document = _templated(*["{{ input.a }}" * 7_000] * 10)
    for answer in (
        await api.post("/api/v1/definitions/validate", json=document),
        await api.post("/api/v1/definitions", json=document),
    ):
        assert answer.status_code in (200, 422), answer.text
        problems = answer.json().get("problems") or answer.json()["details"]["problems"]
        # Reported once, where the total passes the cap; the templates after it are not compiled at all.
        assert problems == [
            {
                "path": "$.steps[1].with.value",
                "message": "the templates of a definition hold at most 100,000 characters together; this one "
                "brings them to 182,000",
            }
        ]
    assert (await api.get("/api/v1/definitions")).json() == []


async def test_validating_templates_leaves_the_event_loop_free(api: httpx.AsyncClient) -> None:
    # Compiling a long template takes seconds; on the event loop, the API answered nobody meanwhile.
    slow = "x{{ [" + ",".join(["[1, 2]"] * 13_000) + "] }}"
    finished: list[str] = []

    async def request(name: str, method: str, url: str, **options: Any) -> httpx.Response:
        answer = await api.request(method, url, **options)
        finished.append(name)
        return answer

    async def health_meanwhile() -> httpx.Response:
        await asyncio.sleep(0.3)  # the validation is under way by then
        return await request("health", "GET", "/health")

    validated, healthy = await asyncio.gather(
        request("validate", "POST", "/api/v1/definitions/validate", json=_templated(slow)), health_meanwhile()
    )
    assert validated.json() == {"valid": True, "problems": []}
    assert healthy.status_code == 200
    assert finished == ["health", "validate"]
