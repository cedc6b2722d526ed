"""Connectors through the API on both stores (SQLite and PostgreSQL), and steps that use them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.connectors import mask_url
from core.settings import Settings
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.outcome import history_text

PASSWORD = "Sup3r-s3cret"
TOKEN = "tok-abcdef-123456"
NO_SUSPEND = {"suspend": False, "retries": []}


@pytest.fixture
def settings(task_queue: str, database_url: str) -> Settings:
    """The worker reads connectors from the same store as the API."""
    return Settings(task_queue=task_queue, database_url=database_url)


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(api_settings(temporal_env, task_queue, database_url)) as http:
        yield http


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("create table products (sku text, price real)")
        db.executemany("insert into products values (?, ?)", [("A-1", 12.5), ("B-2", 3.25)])
    return path


async def test_create_list_get_masked_and_delete(api: httpx.AsyncClient) -> None:
    sql = {
        "name": "warehouse",
        "type": "sql",
        "config": {"url": f"postgresql+asyncpg://app:{PASSWORD}@db.internal:5432/shop", "allow_writes": True},
    }
    http = {
        "name": "supplier",
        "type": "http",
        "config": {
            "base_url": "https://supplier.example/api",
            "auth": {"type": "bearer", "token": TOKEN},
            "headers": {"X-Api-Key": TOKEN, "Accept": "application/json"},
            "paging": {"style": "cursor", "cursor_field": "meta.next"},
        },
    }
    created = await api.post("/api/v1/connectors", json=sql)
    assert created.status_code == 201, created.text
    assert created.json()["config"] == {
        "url": "postgresql+asyncpg://app:***@db.internal:5432/shop",
        "allow_writes": True,
    }
    assert (await api.post("/api/v1/connectors", json=http)).status_code == 201
    again = await api.post("/api/v1/connectors", json=sql)
    assert again.status_code == 409 and again.json()["error_code"] == "CONNECTOR_EXISTS"

    listed = await api.get("/api/v1/connectors")
    assert [c["name"] for c in listed.json()] == ["supplier", "warehouse"]
    one = (await api.get("/api/v1/connectors/supplier")).json()
    assert one["type"] == "http"
    assert one["config"]["auth"]["type"] == "bearer" and one["config"]["auth"]["token"] == "***"
    assert one["config"]["headers"] == {"X-Api-Key": "***", "Accept": "application/json"}
    assert one["config"]["paging"]["cursor_field"] == "meta.next"
    for text in (created.text, listed.text, (await api.get("/api/v1/connectors/warehouse")).text):
        assert PASSWORD not in text and TOKEN not in text

    assert (await api.delete("/api/v1/connectors/warehouse")).status_code == 200
    gone = await api.get("/api/v1/connectors/warehouse")
    assert gone.status_code == 404 and gone.json()["error_code"] == "CONNECTOR_NOT_FOUND"
    assert (await api.delete("/api/v1/connectors/warehouse")).status_code == 404


BAD_CONNECTORS: list[tuple[dict[str, Any], str]] = [
    ({"name": "a", "type": "sql", "config": {"url": "sqlite:///plain-driver.db"}}, "$.config.url"),
    ({"name": "a", "type": "sql", "config": {"url": "mysql+aiomysql://u@h/db"}}, "$.config.url"),
    ({"name": "a", "type": "sql", "config": {}}, "$.config.url"),
    (
        {"name": "a", "type": "sql", "config": {"url": "sqlite+aiosqlite:///x.db", "extra": 1}},
        "$.config.extra",
    ),
    ({"name": "a", "type": "http", "config": {"base_url": "ftp://x"}}, "$.config.base_url"),
    (
        {"name": "a", "type": "http", "config": {"base_url": "https://x", "auth": {"type": "bearer"}}},
        "$.config.auth",
    ),
    (
        {"name": "a", "type": "http", "config": {"base_url": "https://x", "paging": {"style": "offset"}}},
        "$.config.paging.style",
    ),
    ({"name": "a", "type": "ftp", "config": {}}, "$.body.type"),
    ({"name": "Bad Name", "type": "sql", "config": {"url": "sqlite+aiosqlite:///x.db"}}, "$.body.name"),
]


async def test_a_bad_connector_is_422_with_the_path(api: httpx.AsyncClient) -> None:
    for body, path in BAD_CONNECTORS:
        response = await api.post("/api/v1/connectors", json=body)
        assert response.status_code == 422, response.text
        assert path in [p["path"] for p in response.json()["details"]["problems"]], (path, response.text)
    assert (await api.get("/api/v1/connectors")).json() == []


async def test_replace_rotates_credentials(api: httpx.AsyncClient, shop: Path) -> None:
    body = {"name": "shop", "type": "sql", "config": {"url": f"sqlite+aiosqlite:///{shop}"}}
    assert (await api.post("/api/v1/connectors", json=body)).status_code == 201
    replaced = await api.put(
        "/api/v1/connectors/shop",
        json={"type": "sql", "config": {"url": body["config"]["url"], "allow_writes": True}},
    )
    assert replaced.status_code == 200 and replaced.json()["config"]["allow_writes"] is True
    missing = await api.put("/api/v1/connectors/nope", json={"type": "sql", "config": body["config"]})
    assert missing.status_code == 404


async def test_a_sqlite_url_shows_as_given(api: httpx.AsyncClient, shop: Path) -> None:
    url = f"sqlite+aiosqlite:///{shop}"  # an absolute path: four slashes, none of which may go
    assert url.startswith("sqlite+aiosqlite:////")
    created = await api.post(
        "/api/v1/connectors", json={"name": "shop", "type": "sql", "config": {"url": url}}
    )
    assert created.status_code == 201 and created.json()["config"]["url"] == url, created.text
    assert (await api.get("/api/v1/connectors/shop")).json()["config"]["url"] == url
    assert [c["config"]["url"] for c in (await api.get("/api/v1/connectors")).json()] == [url]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite+aiosqlite:////abs/shop.db", "sqlite+aiosqlite:////abs/shop.db"),
        ("sqlite+aiosqlite:///relative/shop.db", "sqlite+aiosqlite:///relative/shop.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        (
            "sqlite+aiosqlite:///shop.db?mode=ro&password=pw",
            "sqlite+aiosqlite:///shop.db?mode=ro&password=***",
        ),
        ("postgresql+asyncpg://app:pw@db:5432/shop", "postgresql+asyncpg://app:***@db:5432/shop"),
        (
            "postgresql+asyncpg://app@db/shop?sslmode=require",
            "postgresql+asyncpg://app@db/shop?sslmode=require",
        ),
        ("https://u:pw@api.example/v1?token=t#top", "https://u:***@api.example/v1?token=***#top"),
    ],
)
def test_mask_url_keeps_the_url_and_hides_credentials(url: str, shown: str) -> None:
    assert mask_url(url) == shown


async def run(api: httpx.AsyncClient, steps: list[dict[str, Any]]) -> dict[str, Any]:
    document = {"name": "uses-connector", "failure": NO_SUSPEND, "steps": steps}
    saved = await api.post("/api/v1/definitions", json=document, params={"publish": True})
    assert saved.status_code in (200, 201), saved.text
    started = await api.post("/api/v1/definitions/uses-connector/executions", json={"input": {}, "wait": 20})
    assert started.status_code in (200, 201), started.text
    body: dict[str, Any] = started.json()
    return body


async def test_a_step_reads_through_a_connector_made_with_the_api(
    api: httpx.AsyncClient, client: Client, shop: Path
) -> None:
    body = {"name": "shop", "type": "sql", "config": {"url": f"sqlite+aiosqlite:///{shop}"}}
    assert (await api.post("/api/v1/connectors", json=body)).status_code == 201
    result = await run(
        api,
        [
            {
                "id": "read",
                "type": "database_query",
                "with": {"connector": "shop", "sql": "select sku from products"},
            }
        ],
    )
    assert result["state"] == "COMPLETED", result
    assert result["output"]["rows"] == [{"sku": "A-1"}, {"sku": "B-2"}]
    history = history_text(await client.get_workflow_handle(result["execution_id"]).fetch_history())
    assert str(shop) not in history, "the connector's URL stays in the store"


async def test_an_unknown_connector_or_one_of_the_wrong_type_fails_the_step(api: httpx.AsyncClient) -> None:
    result = await run(
        api,
        [
            {
                "id": "read",
                "type": "database_query",
                "with": {"connector": "nowhere", "sql": "select 1"},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
            }
        ],
    )
    assert result["state"] == "FAILED", result
    assert result["error"]["code"] == "ConnectorNotFound"
    assert result["error"]["step"] == "read"
    assert "nowhere" in result["error"]["message"]
    assert "POST /api/v1/connectors" in result["error"]["message"]

    body = {"name": "nowhere", "type": "http", "config": {"base_url": "https://supplier.example"}}
    assert (await api.post("/api/v1/connectors", json=body)).status_code == 201
    started = await api.post("/api/v1/definitions/uses-connector/executions", json={"input": {}, "wait": 20})
    again = started.json()
    assert again["state"] == "FAILED", again
    assert again["error"]["code"] == "ConnectorNotFound"
    assert "http connector" in again["error"]["message"]
