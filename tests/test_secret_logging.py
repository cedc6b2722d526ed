"""Secrets never reach a log line: steps and notifications that use ``{{ secrets.X }}`` run through the real
API and worker with every logger captured at DEBUG, and no secret value shows in what was logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities._masking import MASK
from core.settings import Settings
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.target import Target

HOOK_SECRET = "hook-s3cret-value-987"
BOOTSTRAP = "cvk_logs0000_" + "l" * 40


@pytest.fixture
def secrets(target: Target) -> dict[str, SecretStr]:
    return {"TARGET_TOKEN": SecretStr(target.token), "HOOK_SECRET": SecretStr(HOOK_SECRET)}


@pytest.fixture
def settings(task_queue: str, secrets: dict[str, SecretStr]) -> Settings:
    """The worker's settings: the secrets, and loopback allowed (the default test allow-list)."""
    return Settings(task_queue=task_queue, secrets=secrets)


@pytest.fixture
async def api(
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    secrets: dict[str, SecretStr],
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[httpx.AsyncClient]:
    caplog.set_level(logging.DEBUG)  # every logger, the libraries' included, at its most talkative
    settings = api_settings(
        temporal_env,
        task_queue,
        f"sqlite+aiosqlite:///{tmp_path}/api.db",
        secrets=secrets,
        auth="on",
        bootstrap_admin_key=BOOTSTRAP,
    )
    async with running_api(settings, key=BOOTSTRAP) as http:
        yield http


def uses_secrets(target: Target, key: str) -> dict[str, object]:
    return {
        "name": "secretive",
        "failure": {"suspend": False, "retries": []},
        "steps": [
            {
                "id": "private",
                "type": "http_request",
                "with": {
                    "url": f"{target.url}/private",
                    "auth": {"type": "bearer", "token": "{{ secrets.TARGET_TOKEN }}"},
                },
            },
            {
                "id": "query",
                "type": "http_request",
                # The token in the query string (httpx logs the full URL) and echoed back in the body.
                "with": {"url": f"{target.url}/echo?token={{{{ secrets.TARGET_TOKEN }}}}&k={key}"},
            },
            {
                "id": "tell",
                "type": "notification",
                "with": {
                    "channel": "webhook",
                    "url": f"{target.url}/hook/{key}",
                    "headers": {"X-Hook-Secret": "{{ secrets.HOOK_SECRET }}"},
                    "payload": {
                        "token": "{{ secrets.HOOK_SECRET }}",
                        "text": "sent with {{ secrets.HOOK_SECRET }}",
                    },
                },
            },
            {
                "id": "log",
                "type": "notification",
                "with": {"channel": "log", "message": "done: {{ secrets.HOOK_SECRET }}"},
            },
        ],
    }


def fails_with_secret(target: Target) -> dict[str, object]:
    """A step whose URL carries the secret and that fails: the failure is logged with its traceback."""
    return {
        "name": "secretive-failure",
        "failure": {"suspend": False, "retries": []},
        "steps": [
            {
                "id": "broken",
                "type": "http_request",
                "with": {"url": f"{target.url}/status/500?token={{{{ secrets.TARGET_TOKEN }}}}"},
                "retry": {"max_attempts": 2, "initial_interval": "100ms"},
            }
        ],
    }


async def run(api: httpx.AsyncClient, definition: dict[str, object]) -> dict[str, object]:
    saved = await api.post("/api/v1/definitions", json=definition)
    assert saved.status_code == 201, saved.text
    started = await api.post(
        f"/api/v1/definitions/{definition['name']}/executions", json={"input": {}, "wait": 30}
    )
    assert started.status_code == 201, started.text
    body: dict[str, object] = started.json()
    return body


async def test_secrets_never_reach_the_logs(
    api: httpx.AsyncClient, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    key = "logs-" + BOOTSTRAP[-6:]
    done = await run(api, uses_secrets(target, key))
    assert done["state"] == "COMPLETED", done
    failed = await run(api, fails_with_secret(target))
    assert failed["state"] == "FAILED", failed

    # The secrets were really used: the target saw them, so a clean log is not an accident.
    assert {"path": "/private", "authorization": f"Bearer {target.token}"} in target.requests
    [hook] = [r for r in target.requests if r.get("path") == f"/hook/{key}"]
    assert hook["json"]["token"] == HOOK_SECRET
    assert any(r.get("query", {}).get("token") == target.token for r in target.requests)

    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert "HTTP Request" in logged and "/status/500" in logged, "the capture saw the worker's HTTP calls"
    assert f"token={MASK}" in logged, "the URL was logged, masked"
    assert "Completing activity as failed" in logged, "the failure was logged (with its traceback)"
    for secret in (target.token, HOOK_SECRET, BOOTSTRAP):
        assert secret not in logged, f"{secret!r} leaked into the logs"

    # Nor do the API's answers carry them: outputs, errors, history.
    for execution in (done, failed):
        shown = await api.get(f"/api/v1/executions/{execution['execution_id']}")
        history = await api.get(f"/api/v1/executions/{execution['execution_id']}/history")
        for text in (shown.text, history.text):
            assert target.token not in text and HOOK_SECRET not in text
