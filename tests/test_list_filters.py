"""List filters through the real API: a filter value that can match nothing is a 422 naming its field, before
any query reaches Temporal or the store; the values that can match are still accepted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _named_field(answer: httpx.Response) -> str:
    """The field a 422 names: a validation problem's path, or the service's ``details.field``."""
    assert answer.status_code == 422, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"error_code", "message", "details"}
    details = body["details"]
    if "problems" in details:
        [problem] = details["problems"]
        return str(problem["path"]).rsplit(".", 1)[-1]
    return str(details["field"])


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/executions?state=BOGUS", "state"),
        ("/api/v1/executions?state=completed", "state"),  # states are upper case, as visibility keeps them
        ("/api/v1/executions?definition=No%20Such%20Name", "definition"),
        ("/api/v1/executions?stage=not%20a%20stage", "stage"),
        ("/api/v1/stats?definition=Bad%21", "definition"),
        ("/api/v1/triggers?definition=Bad%21", "definition"),
        ("/api/v1/entities/task?state=bogus", "state"),
        ("/api/v1/entities/task?priority=urgent", "priority"),
    ],
)
async def test_a_filter_that_can_match_nothing_is_a_422_naming_it(
    api: httpx.AsyncClient, path: str, field: str
) -> None:
    assert _named_field(await api.get(path)) == field


async def test_bulk_filter_values_are_checked_too(api: httpx.AsyncClient) -> None:
    for bad, field in (({"state": "BOGUS"}, "state"), ({"definition": "Bad!"}, "definition")):
        answer = await api.post("/api/v1/executions/bulk/cancel", json={"filter": bad, "dry_run": True})
        assert _named_field(answer) == field


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/executions?state=COMPLETED&definition=hello&stage=NEW",
        "/api/v1/executions?stage=DONE",
        "/api/v1/executions?stage=extraction",
        "/api/v1/stats?definition=hello",
        "/api/v1/triggers?definition=hello",
        "/api/v1/entities/task?state=blocked&priority=high",
    ],
)
async def test_filters_that_can_match_are_accepted(api: httpx.AsyncClient, path: str) -> None:
    answer = await api.get(path)
    assert answer.status_code == 200, answer.text
