"""Traces from the API request through the workflow to each step, OTLP export, and the worker's metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core import telemetry
from core.settings import Settings
from core.telemetry import export_spans, setup_tracing, worker_runtime
from core.temporal import connect
from tests.conftest import api_settings
from tests.support import run
from tests.support.api import running_api
from tests.support.target import Target, free_port, serve
from worker import conveyor_worker

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "conveyor.json"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the process ends while the test runs, from the same provider the API and worker use."""
    provider = setup_tracing(Settings(), service="conveyor-test")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays on the global provider; a shut exporter drops what it gets


def traced_definition(name: str, target: Target) -> dict[str, Any]:
    return {
        "name": name,
        "failure": {"suspend": False, "retries": []},
        "steps": [
            {"id": "call", "type": "http_request", "with": {"url": f"{target.url}/echo"}},
            {"id": "note", "type": "notification", "with": {"channel": "log", "message": "called"}},
        ],
    }


async def start(api: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    saved = await api.post("/api/v1/definitions", json=document)
    assert saved.status_code == 201, saved.text
    started = await api.post(f"/api/v1/definitions/{document['name']}/executions", json={"wait": 30})
    assert started.status_code in (200, 201, 202), started.text
    body: dict[str, Any] = started.json()
    return body


def find(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The chain of parents of ``span`` among the recorded spans, nearest first."""
    chain: list[ReadableSpan] = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_trace_from_the_api_request_to_each_step(
    api: httpx.AsyncClient, target: Target, spans: InMemorySpanExporter
) -> None:
    name = f"traced-{uuid.uuid4().hex[:8]}"
    execution = await start(api, traced_definition(name, target))
    assert execution["state"] == "COMPLETED", execution

    route = "POST /api/v1/definitions/{name}/executions"
    expected = [
        route,
        "StartWorkflow:DefinitionWorkflow",
        "RunWorkflow:DefinitionWorkflow",
        "StartActivity:http_request",
        "RunActivity:http_request",
        "StartActivity:notification",
        "RunActivity:notification",
    ]
    # The server span ends once the response is sent, a moment after the client has it.
    for _ in range(200):
        recorded = list(spans.get_finished_spans())
        if all(find(recorded, n) for n in expected):
            break
        await asyncio.sleep(0.05)
    missing = [n for n in expected if not find(recorded, n)]
    assert not missing, f"spans not recorded: {missing}; got {sorted({s.name for s in recorded})}"

    [request] = [s for s in find(recorded, route) if s.kind == SpanKind.SERVER]
    assert request.context is not None
    trace_id = request.context.trace_id
    in_trace = [s for s in recorded if s.context is not None and s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace if s.context is not None}
    for span_name in expected[1:]:
        [span] = find(in_trace, span_name)
        chain = ancestors(span, by_id)
        assert request in chain, f"{span_name} does not descend from the API request span"
        assert chain[-1] is request, f"{span_name}'s chain ends above the request: {chain[-1].name}"

    # Temporal's interceptor records RunWorkflow as a finished leaf (a workflow span cannot stay open across
    # workflow tasks), so the steps' spans hang off StartWorkflow beside it, each RunActivity under its
    # StartActivity.
    start_workflow = find(in_trace, "StartWorkflow:DefinitionWorkflow")[0]
    assert ancestors(start_workflow, by_id)[0] is request
    assert ancestors(find(in_trace, "RunWorkflow:DefinitionWorkflow")[0], by_id)[0] is start_workflow
    for step_type in ("http_request", "notification"):
        chain = ancestors(find(in_trace, f"RunActivity:{step_type}")[0], by_id)
        assert [span.name for span in chain[:2]] == [f"StartActivity:{step_type}", start_workflow.name]


class Collector:
    """A stand-in OTLP/HTTP collector on loopback: keeps the span names of every export it receives.

    Plain Starlette, not FastAPI: FastAPI traces its own requests, and a collector whose requests make
    spans would be sent those spans in turn, forever.
    """

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.paths: list[str] = []
        self.app = Starlette(routes=[Route("/v1/traces", self.traces, methods=["POST"])])

    async def traces(self, request: Request) -> Response:
        self.paths.append(request.url.path)
        export = ExportTraceServiceRequest.FromString(await request.body())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.span_names.extend(span.name for span in scope.spans)
        return Response(status_code=200, media_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    server = Collector()
    async with serve(server.app) as url:
        yield server, url


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    collector: tuple[Collector, str],
) -> None:
    server, url = collector
    # A provider of its own, shut down at the end: the global one would keep sending to a stopped collector.
    provider = TracerProvider()
    settings = Settings(otlp_endpoint=url)
    export_spans(provider, settings)
    try:
        span_name = f"probe-{uuid.uuid4().hex[:8]}"
        with provider.get_tracer("tests").start_as_current_span(span_name):
            pass
        # The exporter posts from its own thread; flushing waits for it without blocking this loop.
        assert await asyncio.to_thread(provider.force_flush)
        assert span_name in server.span_names
        assert set(server.paths) == {"/v1/traces"}
        # Asking again for the same endpoint adds no second exporter (each span would be sent twice).
        export_spans(provider, settings)
        again = f"probe-{uuid.uuid4().hex[:8]}"
        with provider.get_tracer("tests").start_as_current_span(again):
            pass
        assert await asyncio.to_thread(provider.force_flush)
        assert server.span_names.count(again) == 1
    finally:
        await asyncio.to_thread(provider.shutdown)


def test_export_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in telemetry.OTLP_ENV:
        monkeypatch.delenv(variable, raising=False)
    assert telemetry.otlp_endpoint(Settings()) is None
    # Without an endpoint the process still traces (context crosses Temporal), it just keeps no exporter.
    provider = setup_tracing(Settings(), service="conveyor-test")
    assert setup_tracing(Settings(), service="another") is provider
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert telemetry.otlp_endpoint(Settings()) == "http://collector:4318"
    assert telemetry.otlp_endpoint(Settings(otlp_endpoint="http://mine:4318")) == "http://mine:4318"


def metric_names(exposition: str) -> set[str]:
    """Every sample name in a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in exposition.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            found.append((labels, float(match.group(2))))
    return found


def dashboard_metrics() -> set[str]:
    """Metric names the Grafana dashboard queries, with histogram suffixes stripped."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    names = set()
    for expr in exprs:
        for token in re.findall(r"\b((?:temporal|conveyor|process|python)_[a-z0-9_]+)\b", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


async def metered(temporal_env: WorkflowEnvironment, task_queue: str) -> tuple[Client, Settings, str]:
    """A client whose workers serve Prometheus metrics on a free port; its settings; the scrape URL."""
    port = free_port()
    settings = Settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=task_queue,
        worker_metrics_address=f"127.0.0.1:{port}",
    )
    return (
        await connect(settings, runtime=worker_runtime(settings)),
        settings,
        f"http://127.0.0.1:{port}/metrics",
    )


async def test_worker_serves_sdk_and_step_metrics(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, target: Target
) -> None:
    worker_client, settings, metrics_url = await metered(temporal_env, task_queue)
    failing = traced_definition(f"failing-{uuid.uuid4().hex[:8]}", target)
    failing["steps"][0]["with"] = {"url": f"{target.url}/status/422"}
    async with (
        conveyor_worker(worker_client, settings),
        running_api(api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")) as api,
    ):
        done = await start(api, traced_definition(f"metered-{uuid.uuid4().hex[:8]}", target))
        assert done["state"] == "COMPLETED", done
        failed = await start(api, failing)
        assert failed["state"] == "FAILED", failed
        async with httpx.AsyncClient() as http:
            scrape = (await http.get(metrics_url)).text
        api_scrape = (await api.get("/metrics")).text

    exported = metric_names(scrape)
    for sdk_metric in (
        "temporal_workflow_completed",
        "temporal_workflow_failed",
        "temporal_activity_execution_latency_bucket",
        "temporal_activity_execution_failed",
    ):
        assert sdk_metric in exported, f"{sdk_metric} missing from the worker's scrape"

    attempts = {
        (labels["activity_type"], labels["outcome"]): value
        for labels, value in samples(scrape, "conveyor_step_attempts")
        if labels.get("task_queue") == task_queue
    }
    assert attempts[("http_request", "completed")] == 1
    assert attempts[("http_request", "failed")] == 1
    assert attempts[("notification", "completed")] == 1
    assert "conveyor_step_duration_bucket" in exported

    # Whatever the Grafana dashboard plots is a name this run actually exported (worker or API).
    everything = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in exported | metric_names(api_scrape)}
    unknown = {n for n in dashboard_metrics() if n not in everything and f"{n}_total" not in exported}
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"


async def test_worker_process_logs_json_and_serves_metrics(
    temporal_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    """``python worker.py`` as deployed: JSON lines on stderr and a metrics endpoint, from settings alone."""
    port = free_port()
    env = {
        **os.environ,
        "CONVEYOR_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "CONVEYOR_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/worker.db",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_WORKER_METRICS_ADDRESS": f"127.0.0.1:{port}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "worker.py"),
        "--task-queue",
        task_queue,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        definition = {
            "name": "proc",
            "steps": [{"id": "note", "type": "notification", "with": {"channel": "log", "message": "hi"}}],
        }
        handle = await run.start(client, task_queue, definition)
        assert (await handle.result()).state == "COMPLETED"
        async with httpx.AsyncClient() as http:
            for _ in range(100):  # the SDK records a workflow's completion just after it reports it
                scrape = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                if "temporal_workflow_completed" in scrape:
                    break
                await asyncio.sleep(0.1)
        assert "temporal_workflow_completed" in metric_names(scrape)
        assert any(
            labels.get("activity_type") == "notification"
            for labels, _ in samples(scrape, "conveyor_step_attempts")
        )
    finally:
        process.terminate()
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    logged = [json.loads(line) for line in stderr.decode().splitlines()]
    [note] = [line for line in logged if line.get("step_id") == "note" and "hi" in line["message"]]
    assert note["execution_id"] == handle.id
    assert note["step_type"] == "notification"
    assert any("serving task queue" in line["message"] for line in logged)
