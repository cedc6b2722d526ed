"""Shared by the pipeline tests: the API with an interpreter worker on one store, and ways to wait for
items and read what the stage workers recorded."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlmodel import col, func, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core import names
from core.db import create_engine, session_factory
from core.models import StageRun
from core.settings import Settings
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.waiting import BOUND_S
from worker import conveyor_worker


@dataclass
class Stack:
    http: httpx.AsyncClient
    settings: Settings
    client: Client


@pytest.fixture
async def stack(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, database_url: str
) -> AsyncIterator[Stack]:
    """API and interpreter worker on one store; stage workers are started by each test."""
    settings = api_settings(temporal_env, task_queue, database_url)
    async with running_api(settings) as http, conveyor_worker(client, settings):
        yield Stack(http, settings, client)


def fresh(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def pipeline(name: str, *stages: str, heartbeat: float = 30) -> dict[str, Any]:
    """Stages in a row; each gets the upload and what the stage before it produced."""
    steps: list[dict[str, Any]] = []
    for position, stage in enumerate(stages):
        before = f"{{{{ steps.s{position - 1}.output }}}}" if position else "{{ input }}"
        steps.append(
            {
                "id": f"s{position}",
                "type": "stage",
                "with": {
                    "stage": stage,
                    "label": stage.upper(),
                    "input": {"previous": before, "seconds": "{{ input.seconds | default(0) }}"},
                    "blob": "{{ input.file.blob if input.file is defined else none }}",
                    "heartbeat_timeout": heartbeat,
                },
            }
        )
    return {"name": name, "steps": steps}


async def create(stack: Stack, document: dict[str, Any]) -> None:
    answer = await stack.http.post("/api/v1/definitions", json=document)
    assert answer.status_code == 201, answer.text


async def add_text(stack: Stack, name: str, text: str, **metadata: Any) -> str:
    answer = await stack.http.post(
        f"/api/v1/pipelines/{name}/items",
        files={"file": ("note.txt", text.encode(), "text/plain")},
        data={"metadata": json.dumps(metadata)} if metadata else None,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["stage"] == names.STAGE_NEW and body["file"]["size"] == len(text.encode())
    return str(body["execution_id"])


async def result(stack: Stack, execution_id: str) -> dict[str, Any]:
    """Wait for the item to finish and return the execution view."""
    await asyncio.wait_for(stack.client.get_workflow_handle(execution_id).result(), BOUND_S)
    view = await stack.http.get(f"/api/v1/executions/{execution_id}")
    assert view.status_code == 200, view.text
    body: dict[str, Any] = view.json()
    return body


async def stage_of(client: Client, execution_id: str) -> str | None:
    description = await client.get_workflow_handle(execution_id).describe()
    return description.typed_search_attributes.get(names.SA_STAGE)


async def metrics(stack: Stack, name: str) -> dict[str, Any]:
    answer = await stack.http.get(f"/api/v1/pipelines/{name}/metrics")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def completed_runs(settings: Settings, stage: str) -> dict[str, int]:
    """Completed stage attempts per item, from the stage workers' records."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.exec(
                select(StageRun.execution_id, func.count())
                .where(col(StageRun.stage) == stage, col(StageRun.outcome) == "completed")
                .group_by(col(StageRun.execution_id))
            )
            return dict(rows.all())
    finally:
        await engine.dispose()
