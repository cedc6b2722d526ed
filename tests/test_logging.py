"""Structured logs: JSON lines that carry the execution and step they belong to; text stays the default."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.logging import JsonFormatter, configure_logging, step_log_context
from core.settings import Settings
from tests.support.target import Target


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's log lines as JSON, captured for the test; the previous logging is restored after."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging(Settings(log_format="json"), stream=stream)
    yield stream
    root.removeHandler(handler)  # type: ignore[arg-type]
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every captured line, parsed: a line that is not one JSON object fails the test here."""
    parsed = []
    for line in stream.getvalue().splitlines():
        value = json.loads(line)
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


async def test_worker_lines_carry_execution_and_step_ids(
    api: httpx.AsyncClient, target: Target, json_logs: io.StringIO
) -> None:
    name = f"logged-{uuid.uuid4().hex[:8]}"
    document = {
        "name": name,
        "steps": [
            {"id": "call", "type": "http_request", "with": {"url": f"{target.url}/echo"}},
            {"id": "note", "type": "notification", "with": {"channel": "log", "message": "hello logs"}},
        ],
    }
    assert (await api.post("/api/v1/definitions", json=document)).status_code == 201
    started = await api.post(f"/api/v1/definitions/{name}/executions", json={"wait": 30})
    execution = started.json()
    assert execution["state"] == "COMPLETED", execution

    logged = lines(json_logs)
    mine = [line for line in logged if line.get("execution_id") == execution["execution_id"]]
    steps: dict[str, list[dict[str, Any]]] = {}
    for line in mine:
        if "step_id" in line:
            steps.setdefault(line["step_id"], []).append(line)
    assert set(steps) >= {"call", "note"}, mine
    # Every line inside a step carries it, whoever logged it (the activity, httpx, the SDK).
    assert {line["step_type"] for line in steps["call"]} == {"http_request"}
    assert {line["step_type"] for line in steps["note"]} == {"notification"}
    [call] = [line for line in steps["call"] if line["logger"] == "temporalio.activity"]
    [note] = [line for line in steps["note"] if "hello logs" in line["message"]]
    assert "/echo" in call["message"]
    assert call["attempt"] == 1
    for line in (call, note):
        assert {"time", "level", "logger", "message"} <= set(line)
        # The step's span is current while it logs, so a line leads to its trace.
        assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16


def test_step_context_reaches_any_logger_inside_the_block(json_logs: io.StringIO) -> None:
    log = logging.getLogger("some.library")
    with step_log_context(execution_id="orders/42", step_id="charge", attempt=2):
        log.warning("inside %s", "the step", extra={"order": 42})
    log.warning("outside")
    inside, outside = lines(json_logs)[-2:]
    assert inside["execution_id"] == "orders/42"
    assert inside["step_id"] == "charge"
    assert inside["attempt"] == 2
    assert inside["order"] == 42
    assert inside["message"] == "inside the step"
    assert inside["level"] == "WARNING" and inside["logger"] == "some.library"
    assert "execution_id" not in outside and "step_id" not in outside


def test_exceptions_are_one_line_with_the_traceback() -> None:
    try:
        raise ValueError("bad row")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: bad row" in json.loads(text)["exception"]


def test_text_is_the_default_and_a_configured_host_keeps_its_logging() -> None:
    assert Settings().log_format == "text"
    root = logging.getLogger()
    level = root.level
    existing = logging.StreamHandler(io.StringIO())
    root.addHandler(existing)
    try:
        # The API's lifespan asks politely: under a host that set up logging it changes nothing.
        assert configure_logging(Settings(log_format="json"), force=False) is None
        stream = io.StringIO()
        handler = configure_logging(Settings(), stream=stream)
        assert handler is not None
        logging.getLogger("conveyor.test").info("plain words")
        root.removeHandler(handler)
        assert stream.getvalue().rstrip().endswith("INFO conveyor.test plain words")
    finally:
        root.removeHandler(existing)
        root.setLevel(level)


def test_a_bad_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]


def test_log_level_is_read_in_any_case() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="loud")  # type: ignore[arg-type]
