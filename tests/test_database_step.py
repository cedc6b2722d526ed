"""``database_query`` against real databases: a SQLite file the test makes and the CI's PostgreSQL."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.connectors import PG_TEST_URL, add_connector, migrated_store
from tests.support.outcome import completes, fails
from tests.support.target import free_port
from workflows.definition import DefinitionInvalid, parse

FAST_RETRY = {"max_attempts": 2, "initial_interval": "100ms", "backoff": 1.0}
PRODUCTS = [("A-1", "12.50", "2024-05-01"), ("B-2", "3.25", "2024-05-02"), ("C-3", "99.00", "2024-05-03")]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def settings(task_queue: str, store_url: str) -> Settings:
    """The worker reads its connectors from this test's store."""
    return Settings(task_queue=task_queue, database_url=store_url)


@pytest.fixture
async def sessions(store_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated_store(store_url) as made:
        yield made


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A SQLite database with a products table of three rows."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("create table products (sku text primary key, price numeric, added date, qty integer)")
        db.executemany("insert into products values (?, ?, ?, 5)", PRODUCTS)
    return path


def query(step_id: str, with_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "database_query", "with": with_, **fields}


def definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "db", "steps": list(steps)}


def skus(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("select sku from products order by sku")]


async def test_select_returns_rows_as_objects(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession], shop: Path
) -> None:
    await add_connector(sessions, "shop", "sql", {"url": f"sqlite+aiosqlite:///{shop}"})
    result = await completes(
        client,
        worker.task_queue,
        definition(
            query(
                "cheap",
                {
                    "connector": "shop",
                    "sql": "select sku, price, added from products where price < :limit order by sku",
                    "params": {"limit": "{{ input.limit }}"},
                },
            ),
            query("capped", {"connector": "shop", "sql": "select sku from products", "max_rows": 2}),
        ),
        {"limit": 50},
    )
    assert result.steps[0].status == "completed"
    capped = result.output
    assert capped["row_count"] == 2 and capped["truncated"] is True


async def test_select_output_shape(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession], shop: Path
) -> None:
    await add_connector(sessions, "shop", "sql", {"url": f"sqlite+aiosqlite:///{shop}"})
    result = await completes(
        client,
        worker.task_queue,
        definition(
            query(
                "cheap",
                {
                    "connector": "shop",
                    "sql": "select sku, price, qty from products where price < :limit order by sku",
                    "params": {"limit": "{{ input.limit }}"},
                },
            )
        ),
        {"limit": 50},
    )
    assert result.output == {
        "rows": [{"sku": "A-1", "price": 12.5, "qty": 5}, {"sku": "B-2", "price": 3.25, "qty": 5}],
        "row_count": 2,
        "truncated": False,
    }


async def test_insert_with_params_each_on_a_writable_connector(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession], shop: Path
) -> None:
    await add_connector(
        sessions, "warehouse", "sql", {"url": f"sqlite+aiosqlite:///{shop}", "allow_writes": True}
    )
    result = await completes(
        client,
        worker.task_queue,
        definition(
            query(
                "save",
                {
                    "connector": "warehouse",
                    "sql": "insert into products (sku, price, added, qty) values (:sku, :price, :day, :qty)",
                    "params": {"day": "2024-06-01", "qty": 1},
                    "params_each": "{{ input.rows }}",
                },
            ),
            query(
                "bump",
                {
                    "connector": "warehouse",
                    "sql": "update products set qty = qty + :n where sku like 'N-%'",
                    "params": {"n": 2},
                },
            ),
        ),
        {"rows": [{"sku": "N-1", "price": 1.5}, {"sku": "N-2", "price": 2.5}, {"sku": "N-3", "price": 4}]},
    )
    assert result.output == {"row_count": 3}
    assert skus(shop) == ["A-1", "B-2", "C-3", "N-1", "N-2", "N-3"]
    with sqlite3.connect(shop) as db:
        assert db.execute("select qty, added from products where sku = 'N-2'").fetchone() == (3, "2024-06-01")


@pytest.mark.parametrize(
    "sql",
    [
        "insert into products (sku) values (:sku)",
        "delete from products where sku = :sku",
        "with gone as (delete from products where sku = :sku returning sku) select * from gone",
    ],
)
async def test_a_write_on_a_read_only_connector_is_refused(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession], shop: Path, sql: str
) -> None:
    await add_connector(sessions, "shop", "sql", {"url": f"sqlite+aiosqlite:///{shop}"})
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            query("write", {"connector": "shop", "sql": sql, "params": {"sku": "A-1"}}, retry=FAST_RETRY)
        ),
    )
    assert failure.type == "ConnectorReadOnly"
    assert "allow_writes" in failure.message
    assert failure.step("write")["attempts"] == 1
    assert skus(shop) == ["A-1", "B-2", "C-3"]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("select * from no_such_table", "no such table"),
        ("select 1; delete from products", "exactly one SQL statement"),
        ("drop table products", "only SELECT, INSERT, UPDATE and DELETE"),
        ("select sku from products where sku = :missing", "missing"),
    ],
)
async def test_sql_errors_fail_without_retry(
    client: Client,
    worker: Worker,
    sessions: async_sessionmaker[AsyncSession],
    shop: Path,
    sql: str,
    reason: str,
) -> None:
    await add_connector(sessions, "shop", "sql", {"url": f"sqlite+aiosqlite:///{shop}", "allow_writes": True})
    failure = await fails(
        client,
        worker.task_queue,
        definition(query("bad", {"connector": "shop", "sql": sql}, retry=FAST_RETRY)),
    )
    assert failure.type == "SqlError"
    assert reason in failure.message
    assert failure.step("bad")["attempts"] == 1
    assert skus(shop) == ["A-1", "B-2", "C-3"]


async def test_an_unreachable_database_is_retried(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    url = f"postgresql+asyncpg://postgres:Pa55word@127.0.0.1:{free_port()}/nothing"
    await add_connector(sessions, "down", "sql", {"url": url})
    failure = await fails(
        client,
        worker.task_queue,
        definition(query("read", {"connector": "down", "sql": "select 1"}, retry=FAST_RETRY)),
    )
    assert failure.type == "DatabaseUnavailable"
    assert failure.step("read")["attempts"] == 2
    assert "Pa55word" not in failure.message


SHORT_PASSWORD = "pw"
"""Too short to mask wherever it occurs: it is in ordinary words ("upward")."""


async def test_a_short_password_is_masked_where_it_stands_as_the_credential(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Wherever the connector's password stands as a credential — a URL's password, the value after
    ``password=``, a column named password — it is masked in the step's error and result, however short;
    elsewhere the text stays as it is. PostgreSQL (trust auth: any password logs in) quotes in its error the
    value it could not read."""
    url = f"postgresql+asyncpg://postgres:{SHORT_PASSWORD}@127.0.0.1:5432/test"
    await add_connector(sessions, "pg", "sql", {"url": url})
    dsn = f"postgresql://app:{SHORT_PASSWORD}@db.internal/shop"
    failure = await fails(
        client,
        worker.task_queue,
        definition(query("bad", {"connector": "pg", "sql": f"select '{dsn}'::int"}, retry=FAST_RETRY)),
    )
    assert failure.type == "SqlError"
    assert 'integer: "postgresql://app:***@db.internal/shop"' in failure.message, failure.message

    sql = (
        f"select '{dsn}' as dsn, 'password={SHORT_PASSWORD}&user=app' as pair,"
        f" '{SHORT_PASSWORD}' as password, 'upward {SHORT_PASSWORD}' as plain"
    )
    result = await completes(
        client, worker.task_queue, definition(query("read", {"connector": "pg", "sql": sql}))
    )
    assert result.output["rows"] == [
        {
            "dsn": "postgresql://app:***@db.internal/shop",
            "pair": "password=***&user=app",
            "password": "***",
            "plain": f"upward {SHORT_PASSWORD}",
        }
    ]


def test_templated_sql_is_rejected_at_validation() -> None:
    document = definition(
        query(
            "ok",
            {
                "connector": "shop",
                "sql": "select * from products where sku = :sku",
                "params": {"sku": "{{ input.sku }}"},
            },
        ),
        query("bad", {"connector": "shop", "sql": "select * from products where sku = '{{ input.sku }}'"}),
        query(
            "block", {"connector": "shop", "sql": "select * from products {% if input.x %}where 1{% endif %}"}
        ),
        query("params", {"connector": "shop", "sql": "select 1", "params": "not an object"}),
    )
    with pytest.raises(DefinitionInvalid) as caught:
        parse(document)
    problems = {p.path: p.message for p in caught.value.problems}
    assert set(problems) == {"$.steps[1].with.sql", "$.steps[2].with.sql", "$.steps[3].with.params"}
    assert "params" in problems["$.steps[1].with.sql"] and ":name" in problems["$.steps[1].with.sql"]


async def test_postgres_insert_select_and_read_only(
    client: Client, worker: Worker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    table = f"conveyor_db_step_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_TEST_URL.replace("+asyncpg", ""))
    try:
        await admin.execute(
            f"create table {table} (sku text primary key, price numeric(10, 2), added date, "
            "seen timestamptz default '2024-05-01T10:00:00Z', tags jsonb default '[]')"
        )
        await admin.execute(f"create sequence {table}_seq")
        await add_connector(sessions, "pg", "sql", {"url": PG_TEST_URL, "allow_writes": True})
        await add_connector(sessions, "pg-read", "sql", {"url": PG_TEST_URL})
        result = await completes(
            client,
            worker.task_queue,
            definition(
                query(
                    "save",
                    {
                        "connector": "pg",
                        "sql": f"insert into {table} (sku, price, added) "
                        "values (:sku, :price, to_date(:added, 'YYYY-MM-DD'))",
                        "params_each": "{{ input.rows }}",
                    },
                ),
                query(
                    "read",
                    {
                        "connector": "pg-read",
                        "sql": f"select sku, price, added, seen, tags from {table} "
                        "where price > :min order by sku",
                        "params": {"min": 2},
                    },
                ),
            ),
            {
                "rows": [
                    {"sku": "P-1", "price": 1.5, "added": "2024-06-01"},
                    {"sku": "P-2", "price": 12.25, "added": "2024-06-02"},
                ]
            },
        )
        assert result.output["rows"] == [
            {
                "sku": "P-2",
                "price": 12.25,
                "added": "2024-06-02",
                "seen": "2024-05-01T10:00:00+00:00",
                "tags": [],
            }
        ]
        assert result.output["row_count"] == 1
        refused = await fails(
            client,
            worker.task_queue,
            definition(
                query("write", {"connector": "pg-read", "sql": f"delete from {table}"}, retry=FAST_RETRY)
            ),
        )
        assert refused.type == "ConnectorReadOnly"
        # The read-only transaction stops what the statement check cannot see, such as a writing function.
        sneaky = await fails(
            client,
            worker.task_queue,
            definition(
                query(
                    "sneaky",
                    {"connector": "pg-read", "sql": f"select nextval('{table}_seq')"},
                    retry=FAST_RETRY,
                )
            ),
        )
        assert sneaky.type == "SqlError"
        assert "read-only transaction" in sneaky.message
        assert await admin.fetchval(f"select count(*) from {table}") == 2
    finally:
        await admin.execute(f"drop table if exists {table}")
        await admin.execute(f"drop sequence if exists {table}_seq")
        await admin.close()
