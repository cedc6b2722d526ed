"""Seed 002's business templates (``examples/product-import.yaml``, ``listing-creation.yaml``,
``inventory-sync.yaml``, ``order-processing.yaml``) end to end through the real API and a worker, against the
demo supplier and marketplace (``examples/demo_service``) on loopback and a warehouse database made from
``examples/demo_service/schema.sql``: the whole chain on SQLite, product-import on PostgreSQL as well."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.settings import Settings
from examples.demo_service import MARKETPLACE_TOKEN, SUPPLIER_KEY, DemoState, create_app
from tests.conftest import PG_ADMIN, api_settings
from tests.support.api import running_api
from tests.support.target import free_port, serve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCHEMA = (EXAMPLES / "demo_service" / "schema.sql").read_text()
TEMPLATES = ("product-import", "listing-creation", "inventory-sync", "order-processing")
GOOD_SKUS = [
    "GAR-001",
    "GAR-002",
    "KIT-001",
    "KIT-002",
    "KIT-003",
    "KIT-004",
    "OFF-001",
    "OFF-002",
    "OFF-003",
]


@dataclass
class Demo:
    url: str
    state: DemoState


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
def settings(task_queue: str, store_url: str) -> Settings:
    """The worker reads connectors from the API's store."""
    return Settings(task_queue=task_queue, database_url=store_url)


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment, task_queue: str, worker: Worker, store_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(api_settings(temporal_env, task_queue, store_url)) as http:
        yield http


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    state = DemoState()
    async with serve(create_app(state)) as url:
        yield Demo(url, state)


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A SQLite warehouse with the demo schema."""
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
    return path


@pytest.fixture
async def pg_warehouse() -> AsyncIterator[str]:
    """A fresh PostgreSQL database with the demo schema; its asyncpg DSN."""
    name = f"conveyor_shop_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(SCHEMA)
    finally:
        await db.close()
    yield dsn
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def setup(api: httpx.AsyncClient, demo_url: str, warehouse_url: str) -> None:
    """The three connectors of the templates' headers, then the four templates, as a user would post them."""
    connectors: list[dict[str, Any]] = [
        {
            "name": "supplier",
            "type": "http",
            "config": {
                "base_url": f"{demo_url}/supplier",
                "auth": {"type": "api_key", "header": "X-Api-Key", "token": SUPPLIER_KEY},
                "paging": {"style": "page", "page_size": 5},
            },
        },
        {
            "name": "marketplace",
            "type": "http",
            "config": {
                "base_url": f"{demo_url}/marketplace",
                "auth": {"type": "bearer", "token": MARKETPLACE_TOKEN},
            },
        },
        {"name": "warehouse", "type": "sql", "config": {"url": warehouse_url, "allow_writes": True}},
    ]
    for connector in connectors:
        answer = await api.post("/api/v1/connectors", json=connector)
        assert answer.status_code == 201, answer.text
    for name in TEMPLATES:
        answer = await api.post(
            "/api/v1/definitions",
            content=(EXAMPLES / f"{name}.yaml").read_bytes(),
            headers={"content-type": "application/yaml"},
        )
        assert answer.status_code in (200, 201), answer.text
        assert answer.json()["status"] == "published"


async def run(api: httpx.AsyncClient, name: str, input: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start a template and wait for it; the execution as the API answers it, COMPLETED."""
    answer = await api.post(f"/api/v1/definitions/{name}/executions", json={"input": input or {}, "wait": 50})
    assert answer.status_code == 201, answer.text
    execution: dict[str, Any] = answer.json()
    assert execution["state"] == "COMPLETED", execution
    return execution


async def state_of(api: httpx.AsyncClient, execution_id: str, wanted: str) -> dict[str, Any]:
    """The execution once it reached ``wanted`` (within about 30 seconds)."""
    view: dict[str, Any] = {}
    for _ in range(300):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["state"] == wanted:
            return view
        await asyncio.sleep(0.1)
    pytest.fail(f"{execution_id} is {view.get('state')}, not {wanted}: {view.get('error')}")


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in message for message in caplog.messages)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql))


async def test_the_four_templates_on_sqlite(
    api: httpx.AsyncClient, demo: Demo, warehouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="temporalio.activity")  # where `log` notifications go
    await setup(api, demo.url, f"sqlite+aiosqlite:///{warehouse}")

    # 1. product-import: twelve supplier records in three pages (then an empty one), nine good ones kept.
    imported = (await run(api, "product-import", {"markup": 1.8}))["output"]
    assert imported["fetched"] == 12 and imported["pages"] == 4 and imported["imported"] == 9
    assert [(r["index"], r["sku"]) for r in imported["rejected"]] == [
        (7, None),
        (8, "GAR-003"),
        (11, "KIT-005"),
    ]
    assert imported["rejected"][0]["errors"] == ["sku is missing"]
    assert imported["rejected"][1]["errors"] == ["cost_price must be positive"]
    assert imported["rejected"][2]["errors"] == ["name is missing"]
    products = {
        row[0]: row[1:]
        for row in rows(
            warehouse, "select sku, title, category, price, stock, tags from products order by sku"
        )
    }
    assert sorted(products) == GOOD_SKUS
    assert products["KIT-001"][:4] == ("Chef's Knife 8in", "kitchen", 33.3, 40)
    assert products["KIT-002"][:4] == ("Cast Iron Skillet", "kitchen", 39.6, 12)  # trimmed, upper-cased sku
    assert products["KIT-003"][1] == "kitchen"  # no supplier category: the local AI provider's
    assert products["OFF-002"][1] == "office"
    assert all(tags for *_, tags in products.values())
    assert logged(caplog, "[warn_rejects] rejected supplier records: #7 (no sku): sku is missing, #8 GAR-003")

    # 2. listing-creation: the eight products with a picture go on the marketplace (after one 429).
    listed = (await run(api, "listing-creation"))["output"]
    assert listed["listed"] == [sku for sku in GOOD_SKUS if sku != "OFF-003"]
    assert listed["not_ready"] == [{"sku": "OFF-003", "errors": ["the marketplace needs a picture"]}]
    assert listed["failed"] == []
    assert demo.state.rate_limited == ["POST /marketplace/listings"]
    market = {listing["sku"]: listing for listing in demo.state.listings.values()}
    assert sorted(market) == listed["listed"]
    assert market["KIT-001"]["price"] == 33.3 and market["KIT-001"]["quantity"] == 40
    stored = dict(rows(warehouse, "select sku, listing_id from products where listing_id is not null"))
    assert stored == {sku: listing["listing_id"] for sku, listing in market.items()}

    # 3. inventory-sync: five levels changed, four of them listed; two products run low.
    synced = (await run(api, "inventory-sync", {"low_stock_threshold": 5}))["output"]
    changed = {c["sku"]: (c["was"], c["quantity"]) for c in synced["changed"]}
    assert changed == {
        "GAR-002": (6, 0),
        "KIT-001": (40, 35),
        "KIT-003": (3, 2),
        "OFF-001": (8, 20),
        "OFF-003": (120, 118),
    }
    pushed = {(u["sku"], u["quantity"]) for u in demo.state.inventory_updates}
    assert pushed == {("GAR-002", 0), ("KIT-001", 35), ("KIT-003", 2), ("OFF-001", 20)}
    assert synced["low_stock"] == [{"sku": "GAR-002", "quantity": 0}, {"sku": "KIT-003", "quantity": 2}]
    assert logged(caplog, "[low_stock_alert] low stock (under 5): GAR-002 (0), KIT-003 (2)")
    assert dict(rows(warehouse, "select sku, stock from products where sku in ('KIT-001', 'OFF-003')")) == {
        "KIT-001": 35,
        "OFF-003": 118,
    }

    # 4. order-processing: the 1499.90 order waits for an approval; the others go through on their own.
    answer = await api.post(
        "/api/v1/definitions/order-processing/executions",
        json={"input": {"approval_threshold": 1000}, "id": "orders-1"},
    )
    assert answer.status_code == 201, answer.text
    execution_id = answer.json()["execution_id"]
    await state_of(api, execution_id, "WAITING")
    assert [s["order_id"] for s in demo.state.shipments] == ["MO-1001"]  # the big order holds the rest
    approve = await api.post(
        f"/api/v1/executions/{execution_id}/updates/approve",
        json={"payload": {"approved": True, "by": "ada"}},
    )
    assert approve.status_code == 200, approve.text
    done = await state_of(api, execution_id, "COMPLETED")
    outcome = {
        o["order_id"]: (o["status"], o["approved_by"], o["tracking"]) for o in done["output"]["orders"]
    }
    assert outcome == {
        "MO-1001": ("shipped", "auto", "TRK-MO-1001"),
        "MO-1002": ("shipped", "ada", "TRK-MO-1002"),
        "MO-1003": ("shipped", "auto", "TRK-MO-1003"),
        "MO-1005": ("backordered", "auto", None),  # five kettles wanted, two in stock
    }
    assert done["output"]["invalid"] == [
        {"order_id": "MO-1004", "errors": ["quantity must be at least 1", "total must be positive"]}
    ]
    assert rows(
        warehouse, "select order_id, status, approved_by, tracking from orders order by order_id"
    ) == [
        ("MO-1001", "shipped", "auto", "TRK-MO-1001"),
        ("MO-1002", "shipped", "ada", "TRK-MO-1002"),
        ("MO-1003", "shipped", "auto", "TRK-MO-1003"),
        ("MO-1005", "backordered", "auto", None),
    ]
    assert sorted(s["order_id"] for s in demo.state.shipments) == ["MO-1001", "MO-1002", "MO-1003"]
    stock = dict(
        rows(warehouse, "select sku, stock from products where sku in ('KIT-001', 'OFF-001', 'KIT-003')")
    )
    assert stock == {"KIT-001": 33, "OFF-001": 10, "KIT-003": 2}  # reserved: 35-2, 20-10; backorder untouched


async def test_product_import_and_orders_on_postgresql(
    api: httpx.AsyncClient, demo: Demo, pg_warehouse: str
) -> None:
    await setup(api, demo.url, pg_warehouse.replace("postgresql://", "postgresql+asyncpg://", 1))
    first = (await run(api, "product-import", {"markup": 2, "enrich": False}))["output"]
    assert first["imported"] == 9 and len(first["rejected"]) == 3
    again = (await run(api, "product-import", {"markup": 2.5, "enrich": False}))["output"]  # an upsert
    assert again["imported"] == 9
    db = await asyncpg.connect(pg_warehouse)
    try:
        found = await db.fetch("select sku, title, category, price, stock, tags from products order by sku")
    finally:
        await db.close()
    assert [r["sku"] for r in found] == GOOD_SKUS
    by_sku = {r["sku"]: r for r in found}
    assert (by_sku["KIT-002"]["title"], by_sku["KIT-002"]["price"], by_sku["KIT-002"]["stock"]) == (
        "Cast Iron Skillet",
        55.0,
        12,
    )
    assert by_sku["KIT-003"]["category"] == "uncategorised"  # enrich: false leaves the gap
    assert {r["tags"] for r in found} == {""}

    # order-processing on PostgreSQL too; nobody approves the big order, so it is rejected after a second.
    orders = (await run(api, "order-processing", {"approval_timeout": "1s"}))["output"]["orders"]
    assert {o["order_id"]: (o["status"], o["approved_by"]) for o in orders} == {
        "MO-1001": ("shipped", "auto"),
        "MO-1002": ("rejected", "timeout"),
        "MO-1003": ("shipped", "auto"),
        "MO-1005": ("backordered", "auto"),
    }
    assert sorted(s["order_id"] for s in demo.state.shipments) == ["MO-1001", "MO-1003"]
    db = await asyncpg.connect(pg_warehouse)
    try:
        stored = await db.fetch("select order_id, status, tracking from orders order by order_id")
        stock = await db.fetch("select sku, stock from products where sku in ('KIT-001', 'OFF-001')")
    finally:
        await db.close()
    assert [tuple(r) for r in stored] == [
        ("MO-1001", "shipped", "TRK-MO-1001"),
        ("MO-1002", "rejected", None),
        ("MO-1003", "shipped", "TRK-MO-1003"),
        ("MO-1005", "backordered", None),
    ]
    assert dict(stock) == {"KIT-001": 38, "OFF-001": 8}  # 40 - 2 reserved; the rejected order took none


async def test_the_demo_service_runs_as_a_module() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.demo_service",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    health = await http.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the demo service did not start")
            assert health.json() == {"status": "ok"}
            assert (await http.get("/supplier/products")).status_code == 401
            page = await http.get(
                "/supplier/products", params={"page": 3}, headers={"X-Api-Key": SUPPLIER_KEY}
            )
            assert len(page.json()["products"]) == 2
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
