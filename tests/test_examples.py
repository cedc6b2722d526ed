"""The shipped examples: every file is a valid definition, and they run as shipped on the real dev server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.worker import Worker

from tests.support.run import start
from tests.support.target import serve
from workflows.definition import DefinitionInvalid, parse

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return document


def test_examples_exist() -> None:
    assert {path.stem for path in EXAMPLE_FILES} >= {
        "hello",
        "order-approval-routing",
        "health-check",
        "nightly-report",
    }


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_example_is_a_valid_definition(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    try:
        definition = parse(document)
    except DefinitionInvalid as exc:
        pytest.fail(f"{path.name}: {exc.problems}")
    # The API publishes each file under its `name`; the file name says the same so people can find it.
    assert definition.name == path.stem
    assert path.read_text().startswith("#"), f"{path.name} should open with a comment saying what it shows"


async def test_hello(client: Client, worker: Worker) -> None:
    handle = await start(client, worker.task_queue, load("hello"), {"name": "Ada"})
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == {"greeting": "Hello, Ada!", "name_length": 3, "logged": True}
    assert [(s.id, s.status) for s in result.steps] == [("greet", "completed"), ("announce", "completed")]


@pytest.mark.parametrize(
    ("order", "decision"),
    [
        ({"order_id": "A-1", "total": 120}, ("auto", "system", 0)),
        ({"order_id": "A-2", "total": 2500}, ("manager", "line-manager", 24)),
        ({"order_id": "A-3", "total": 2500, "customer_tier": "gold"}, ("auto", "system", 0)),
        ({"order_id": "A-4", "total": 10000, "customer_tier": "gold"}, ("finance", "finance-team", 48)),
    ],
    ids=["small", "manager", "gold-skips-manager", "finance"],
)
async def test_order_approval_routing(
    client: Client, worker: Worker, order: dict[str, Any], decision: tuple[str, str, int]
) -> None:
    route, approver, sla_hours = decision
    handle = await start(client, worker.task_queue, load("order-approval-routing"), order)
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == {
        "order_id": order["order_id"],
        "route": route,
        "approver": approver,
        "sla_hours": sla_hours,
        "auto_approved": route == "auto",
    }
    branch_step = {"finance": "finance_review", "manager": "manager_review", "auto": "auto_approve"}
    taken = {s.id for s in result.steps if s.id in branch_step.values() and s.status == "completed"}
    assert taken == {branch_step[route]}


async def test_nightly_report(client: Client, worker: Worker) -> None:
    # settle shortened so the test does not sit through the example's default few seconds.
    handle = await start(
        client, worker.task_queue, load("nightly-report"), {"report_date": "2024-05-01", "settle": "100ms"}
    )
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == {
        "date": "2024-05-01",
        "paid_orders": 2,
        "refunded_orders": 1,
        "revenue": 200.5,
        "refunded": 42,
        "net": 158.5,
    }


@pytest.fixture
async def conveyor_health() -> AsyncIterator[str]:
    """A loopback server answering /health like the Conveyor API does."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async with serve(app) as url:
        yield url


async def test_health_check(client: Client, worker: Worker, conveyor_health: str) -> None:
    handle = await start(client, worker.task_queue, load("health-check"), {"base_url": conveyor_health})
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == {"target": f"{conveyor_health}/health", "status_code": 200, "healthy": True}
    status = {s.id: s.status for s in result.steps}
    assert status["report_healthy"] == "completed"
    assert status["report_unhealthy"] == "skipped"
