"""``http_request`` / ``api_call`` and ``notification`` steps against a real HTTP server on loopback."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.outcome import completes, fails, history_text, statuses
from tests.support.run import start
from tests.support.target import Target

MAX_RESPONSE_BYTES = 10_000
FAST_RETRY = {"max_attempts": 5, "initial_interval": "100ms", "backoff": 1.0}


@pytest.fixture
def settings(task_queue: str, target: Target) -> Settings:
    """The suite's settings with a small response cap, so the cap is cheap to exceed."""
    return Settings(
        task_queue=task_queue,
        secrets={"TARGET_TOKEN": SecretStr(target.token)},
        http_max_response_bytes=MAX_RESPONSE_BYTES,
    )


def http(step_id: str, with_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http_request", "with": with_, **fields}


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "http", "steps": list(steps), **fields}


def key() -> str:
    return uuid.uuid4().hex


async def test_get_with_query_and_headers(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            http(
                "call",
                {
                    "url": f"{target.url}/echo",
                    "query": {"q": "{{ input.q }}", "page": 2},
                    "headers": {"X-Trace": "t-{{ input.q }}"},
                },
            )
        ),
        {"q": "shoes"},
    )
    output = result.output
    assert output["status"] == 200
    assert output["headers"]["content-type"] == "application/json"
    assert output["body"]["method"] == "GET"
    assert output["body"]["query"] == {"q": "shoes", "page": "2"}
    assert output["body"]["headers"]["x-trace"] == "t-shoes"
    [call] = result.steps
    assert call.status == "completed" and call.attempts == 1


async def test_post_json_body(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            http(
                "create",
                {"method": "post", "url": f"{target.url}/echo", "body": {"sku": "{{ input.sku }}", "qty": 3}},
                output="{{ output.body }}",
            )
        ),
        {"sku": "A-1"},
    )
    assert result.output["method"] == "POST"
    assert result.output["headers"]["content-type"] == "application/json"
    assert json.loads(result.output["body"]) == {"sku": "A-1", "qty": 3}


async def test_bearer_secret_reaches_the_server_but_never_the_history(
    client: Client, worker: Worker, target: Target
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            http(
                "private",
                {
                    "url": f"{target.url}/private",
                    "auth": {"type": "bearer", "token": "{{ secrets.TARGET_TOKEN }}"},
                },
            ),
            http(
                "header",
                {
                    "url": f"{target.url}/private",
                    "headers": {"Authorization": "Bearer {{ secrets.TARGET_TOKEN }}"},
                },
            ),
        ),
    )
    result = await handle.result()
    assert result.output["body"] == {"authorized": True}
    assert statuses(result) == {"private": "completed", "header": "completed"}
    history = history_text(await handle.fetch_history())
    assert "secrets.TARGET_TOKEN" in history, "the placeholder travels instead"
    assert target.token not in history


async def test_a_missing_secret_fails_without_retry(client: Client, worker: Worker, target: Target) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(http("call", {"url": f"{target.url}/echo", "headers": {"X-Key": "{{ secrets.NOPE }}"}})),
    )
    assert failure.type == "SecretMissing"
    assert "NOPE" in failure.error["message"]
    assert failure.step("call")["attempts"] == 1


async def test_a_4xx_fails_without_retry(client: Client, worker: Worker, target: Target) -> None:
    before = target.counts["status/422"]
    failure = await fails(
        client,
        worker.task_queue,
        definition(http("call", {"method": "POST", "url": f"{target.url}/status/422"}, retry=FAST_RETRY)),
    )
    assert failure.type == "HttpClientError"
    assert failure.error["step"] == "call"
    assert failure.error["details"] == {"status": 422, "body": {"status": 422}}
    assert failure.step("call")["attempts"] == 1
    assert target.counts["status/422"] == before + 1


async def test_a_4xx_can_be_accepted(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(http("call", {"url": f"{target.url}/status/404", "raise_for_status": False})),
    )
    assert result.output["status"] == 404


async def test_a_5xx_is_retried_until_it_succeeds(client: Client, worker: Worker, target: Target) -> None:
    flaky = key()
    result = await completes(
        client,
        worker.task_queue,
        definition(http("call", {"url": f"{target.url}/flaky/{flaky}/2"}, retry=FAST_RETRY)),
    )
    assert result.output["body"] == {"attempt": 3, "ok": True}
    assert result.steps[0].attempts == 3
    assert target.counts[flaky] == 3


async def test_a_5xx_fails_when_the_retries_run_out(client: Client, worker: Worker, target: Target) -> None:
    flaky = key()
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http("call", {"url": f"{target.url}/flaky/{flaky}/10"}, retry={**FAST_RETRY, "max_attempts": 2})
        ),
    )
    assert failure.type == "HttpServerError"
    assert failure.step("call")["attempts"] == 2
    assert target.counts[flaky] == 2


async def test_non_retryable_types_from_the_step_retry(
    client: Client, worker: Worker, target: Target
) -> None:
    flaky = key()
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http(
                "call",
                {"url": f"{target.url}/flaky/{flaky}/10"},
                retry={**FAST_RETRY, "non_retryable": ["HttpServerError"]},
            )
        ),
    )
    assert failure.type == "HttpServerError"
    assert target.counts[flaky] == 1


async def test_429_waits_for_retry_after(client: Client, worker: Worker, target: Target) -> None:
    limited = key()
    began = time.monotonic()
    result = await completes(
        client,
        worker.task_queue,
        definition(http("call", {"url": f"{target.url}/rate-limited/{limited}/2"}, retry=FAST_RETRY)),
    )
    assert time.monotonic() - began >= 1.5, "the 100ms backoff was replaced by the 2s Retry-After"
    assert result.output["body"] == {"attempt": 2}
    assert result.steps[0].attempts == 2


async def test_step_timeout(client: Client, worker: Worker, target: Target) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http(
                "call",
                {"url": f"{target.url}/slow", "query": {"seconds": 2}},
                timeout="500ms",
                retry={"max_attempts": 1},
            )
        ),
    )
    assert failure.type == "StepTimeout"
    assert failure.error["step"] == "call"


async def test_request_timeout_in_with(client: Client, worker: Worker, target: Target) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http(
                "call",
                {"url": f"{target.url}/slow", "query": {"seconds": 2}, "timeout": "300ms"},
                retry={"max_attempts": 1},
            )
        ),
    )
    assert failure.type == "HttpTimeout"


async def test_a_response_larger_than_the_cap_fails(client: Client, worker: Worker, target: Target) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http(
                "call",
                {"url": f"{target.url}/big", "query": {"size": MAX_RESPONSE_BYTES + 1}},
                retry=FAST_RETRY,
            )
        ),
    )
    assert failure.type == "ResponseTooLarge"
    assert failure.step("call")["attempts"] == 1


async def test_a_response_at_the_cap_is_kept(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            http("call", {"url": f"{target.url}/big", "query": {"size": MAX_RESPONSE_BYTES}}),
            output="{{ steps.call.output.body | length }}",
        ),
    )
    assert result.output == MAX_RESPONSE_BYTES


async def test_a_text_body(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(http("call", {"url": f"{target.url}/text"}, output="{{ output.body }}")),
    )
    assert result.output == "plain words"


async def test_an_unreachable_host_is_a_transport_error(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http("call", {"url": "http://127.0.0.1:9/nothing"}, retry={**FAST_RETRY, "max_attempts": 2})
        ),
    )
    assert failure.type == "HttpTransportError"
    assert failure.step("call")["attempts"] == 2


async def test_api_call_is_an_alias(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {"id": "call", "type": "api_call", "with": {"method": "DELETE", "url": f"{target.url}/echo"}},
        ),
    )
    assert result.output["body"]["method"] == "DELETE"
    assert result.steps[0].type == "api_call"


async def test_api_key_and_basic_auth(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            http(
                "key",
                {"url": f"{target.url}/echo", "auth": {"type": "api_key", "header": "X-Api", "token": "k1"}},
            ),
            http(
                "basic",
                {"url": f"{target.url}/echo", "auth": {"type": "basic", "username": "u", "password": "p"}},
            ),
            output=[
                "{{ steps.key.output.body.headers['x-api'] }}",
                "{{ steps.basic.output.body.headers.authorization }}",
            ],
        ),
    )
    assert result.output == ["k1", "Basic dTpw"]


async def test_notification_to_the_log(
    client: Client, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "tell",
                "type": "notification",
                "with": {"channel": "log", "message": "{{ input.n }} done", "level": "warning"},
            }
        ),
        {"n": 3},
    )
    assert result.output == {"channel": "log", "message": "3 done"}
    assert any("[tell] 3 done" in r.getMessage() for r in caplog.records)


async def test_notification_to_a_webhook(client: Client, worker: Worker, target: Target) -> None:
    hook = key()
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "tell",
                "type": "notification",
                "with": {
                    "channel": "webhook",
                    "url": f"{target.url}/hook/{hook}",
                    "message": "hello {{ input.who }}",
                },
            },
            {
                "id": "custom",
                "type": "notification",
                "with": {
                    "channel": "webhook",
                    "url": f"{target.url}/hook/{hook}",
                    "payload": {"n": "{{ input.n }}"},
                },
            },
        ),
        {"who": "ops", "n": 2},
    )
    assert result.output == {"channel": "webhook", "status": 200}
    assert [r["json"] for r in target.requests if r["path"] == f"/hook/{hook}"] == [
        {"message": "hello ops"},
        {"n": 2},
    ]


async def test_a_log_notification_never_writes_a_secret_to_history_or_logs(
    client: Client, worker: Worker, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "tell",
                "type": "notification",
                "with": {"channel": "log", "message": "token {{ secrets.TARGET_TOKEN }}", "level": "error"},
            }
        ),
    )
    await handle.result()
    assert target.token not in history_text(await handle.fetch_history())
    assert any("[tell] token {{ secrets.TARGET_TOKEN }}" in r.getMessage() for r in caplog.records)
    assert not any(target.token in r.getMessage() for r in caplog.records)


async def test_a_step_retry_overrides_only_the_fields_it_names(
    client: Client, worker: Worker, target: Target
) -> None:
    flaky = key()
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            http("call", {"url": f"{target.url}/flaky/{flaky}/10"}, retry={"initial_interval": "100ms"}),
            defaults={"retry": {"max_attempts": 2, "initial_interval": "1h"}},
        ),
    )
    assert failure.type == "HttpServerError"
    assert failure.step("call")["attempts"] == 2
    assert target.counts[flaky] == 2


async def test_each_call_leaves_a_summary_in_the_execution_log(
    client: Client, worker: Worker, target: Target
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "call", "type": "http_request", "with": {"url": f"{target.url}/echo?token=hidden"}}
        ),
    )
    await handle.result()
    logs = await handle.query("logs")
    [line] = [entry for entry in logs if entry["step"] == "call"]
    assert line["message"] == f"GET {target.url}/echo -> 200"  # the query string, often a token, is left out
    assert line["metadata"]["status"] == 200 and line["metadata"]["bytes"] > 0


async def test_a_secret_echoed_back_is_masked_before_history(
    client: Client, worker: Worker, target: Target
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {
                "id": "call",
                "type": "http_request",
                "with": {
                    "url": f"{target.url}/echo",
                    "auth": {"type": "bearer", "token": "{{ secrets.TARGET_TOKEN }}"},
                },
            }
        ),
    )
    result = await handle.result()
    assert target.requests[-1]["headers"]["authorization"] == "Bearer s3cr3t-token"  # the server got it
    assert result.steps[0].status == "completed"
    assert "s3cr3t-token" not in history_text(await handle.fetch_history())
    view = await handle.query("describe")
    assert view["output"]["body"]["headers"]["authorization"] == "Bearer ***"


def test_secrets_come_from_a_file_too(tmp_path: Any) -> None:
    json_file = tmp_path / "secrets.json"
    json_file.write_text('{"SUPPLIER_TOKEN": "from-json"}')
    lines = tmp_path / "secrets.env"
    lines.write_text("# comment\nSMTP_PASSWORD = 'from-lines'\nOTHER=x=y\n")
    assert Settings(secrets_file=json_file).secrets["supplier_token"].get_secret_value() == "from-json"
    from_lines = Settings(secrets_file=lines, secrets={"other": "env-wins"})  # type: ignore[dict-item]
    assert from_lines.secrets["smtp_password"].get_secret_value() == "from-lines"
    assert from_lines.secrets["other"].get_secret_value() == "env-wins"
