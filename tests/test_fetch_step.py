"""``data_fetch`` through HTTP connectors (page and cursor paging, against the target) and SQL connectors."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.connectors import add_connector, migrated_store
from tests.support.outcome import completes, fails, history_text
from tests.support.run import start
from tests.support.target import CATALOG, CATALOG_KEY, Target

FAST_RETRY = {"max_attempts": 2, "initial_interval": "100ms", "backoff": 1.0}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def settings(task_queue: str, store_url: str) -> Settings:
    return Settings(task_queue=task_queue, database_url=store_url)


@pytest.fixture
async def sessions(store_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated_store(store_url) as made:
        yield made


@pytest.fixture
async def catalog(sessions: async_sessionmaker[AsyncSession], target: Target) -> None:
    """Connectors to the target's /catalog: ``pages`` (bearer, page numbers), ``cursor`` (API key, cursor)."""
    await add_connector(
        sessions,
        "pages",
        "http",
        {
            "base_url": target.url,
            "auth": {"type": "bearer", "token": CATALOG_KEY},
            "paging": {"style": "page", "page_size": 3},
        },
    )
    await add_connector(
        sessions,
        "cursor",
        "http",
        {
            "base_url": f"{target.url}/catalog/",
            "auth": {"type": "api_key", "header": "X-Api-Key", "token": CATALOG_KEY},
            "paging": {"style": "cursor", "cursor_field": "meta.next"},
        },
    )


def fetch(step_id: str, with_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "data_fetch", "with": with_, **fields}


def definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "fetch", "steps": list(steps)}


def seen(target: Target, path: str, since: int) -> list[dict[str, Any]]:
    return [r for r in target.requests[since:] if r.get("path") == path]


@pytest.mark.usefixtures("catalog")
async def test_page_paging_until_an_empty_page(client: Client, worker: Worker, target: Target) -> None:
    before = len(target.requests)
    handle = await start(
        client,
        worker.task_queue,
        definition(fetch("all", {"connector": "pages", "path": "/catalog/pages", "items": "data.items"})),
    )
    result = await handle.result()
    assert result.output == {"items": CATALOG, "pages": 4, "truncated": False}
    calls = seen(target, "/catalog/pages", before)
    assert [c["query"] for c in calls] == [{"page": str(n), "per_page": "3"} for n in (1, 2, 3, 4)]
    assert {c["authorization"] for c in calls} == {f"Bearer {CATALOG_KEY}"}
    assert CATALOG_KEY not in history_text(await handle.fetch_history())


@pytest.mark.usefixtures("catalog")
async def test_max_pages_and_page_size_from_the_step(client: Client, worker: Worker, target: Target) -> None:
    before = len(target.requests)
    result = await completes(
        client,
        worker.task_queue,
        definition(
            fetch(
                "some",
                {
                    "connector": "pages",
                    "path": "catalog/pages",
                    "items": "data.items",
                    "paging": {"max_pages": 2, "page_size": 2},
                },
            )
        ),
    )
    assert result.output == {"items": CATALOG[:4], "pages": 2, "truncated": False}
    assert [c["query"]["per_page"] for c in seen(target, "/catalog/pages", before)] == ["2", "2"]


@pytest.mark.usefixtures("catalog")
async def test_cursor_paging(client: Client, worker: Worker, target: Target) -> None:
    before = len(target.requests)
    handle = await start(
        client,
        worker.task_queue,
        definition(
            fetch(
                "all",
                {
                    "connector": "cursor",
                    "path": "cursor",
                    "query": {"limit": "{{ input.limit }}"},
                    "items": "results",
                },
            )
        ),
        {"limit": 3},
    )
    result = await handle.result()
    assert result.output == {"items": CATALOG, "pages": 3, "truncated": False}
    calls = seen(target, "/catalog/cursor", before)
    assert [c["query"] for c in calls] == [
        {"limit": "3"},
        {"limit": "3", "cursor": "c3"},
        {"limit": "3", "cursor": "c6"},
    ]
    assert {c["api_key"] for c in calls} == {CATALOG_KEY}
    assert CATALOG_KEY not in history_text(await handle.fetch_history())


@pytest.mark.usefixtures("catalog")
async def test_max_items_truncates(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            fetch("few", {"connector": "cursor", "path": "cursor", "items": "results", "max_items": 4})
        ),
    )
    assert result.output == {"items": CATALOG[:4], "pages": 2, "truncated": True}


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(
    ("with_", "code"),
    [
        ({"connector": "pages", "path": "/catalog/pages", "items": "data.nothing"}, "UnexpectedResponse"),
        ({"connector": "pages", "path": "/catalog/pages"}, "UnexpectedResponse"),
        ({"connector": "pages", "path": "http://elsewhere.example/steal"}, "ConfigInvalid"),
        ({"connector": "pages", "path": "/status/404"}, "HttpClientError"),
        ({"connector": "nobody", "path": "/catalog/pages"}, "ConnectorNotFound"),
    ],
)
async def test_failures_without_retry(
    client: Client, worker: Worker, with_: dict[str, Any], code: str
) -> None:
    failure = await fails(client, worker.task_queue, definition(fetch("bad", with_, retry=FAST_RETRY)))
    assert failure.type == code, failure.message
    assert failure.step("bad")["attempts"] == 1


async def test_a_sql_connector_runs_a_select(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("create table stock (sku text, qty integer)")
        db.executemany("insert into stock values (?, ?)", [("A", 1), ("B", 0), ("C", 7)])
    await add_connector(
        sessions, "source", "sql", {"url": f"sqlite+aiosqlite:///{path}", "allow_writes": True}
    )
    result = await completes(
        client,
        worker.task_queue,
        definition(
            fetch(
                "in_stock",
                {
                    "connector": "source",
                    "query": "select sku, qty from stock where qty > :min",
                    "params": {"min": 0},
                },
            )
        ),
    )
    assert result.output == {
        "items": [{"sku": "A", "qty": 1}, {"sku": "C", "qty": 7}],
        "pages": 1,
        "truncated": False,
    }
    failure = await fails(
        client,
        worker.task_queue,
        definition(fetch("write", {"connector": "source", "sql": "delete from stock"}, retry=FAST_RETRY)),
    )
    assert failure.type == "SqlError" and "database_query" in failure.message
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from stock").fetchone() == (3,)
