"""Traces and worker metrics: one OpenTelemetry tracer provider per process, Temporal's tracing interceptor,
the worker's Prometheus endpoint and Conveyor's own step counters.

Traces follow an execution from the API request through ``StartWorkflow``, ``RunWorkflow`` and every step's
``StartActivity`` / ``RunActivity``: Temporal's ``TracingInterceptor`` carries the context in workflow and
activity headers. Spans are exported over OTLP/HTTP when ``CONVEYOR_OTLP_ENDPOINT`` (or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, and dropped otherwise.

The worker's metrics are the SDK's own (``temporal_*``) plus ``conveyor_step_*``, both recorded through the
Temporal runtime's meter so one Prometheus endpoint (``CONVEYOR_WORKER_METRICS_ADDRESS``) serves them all.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core.logging import step_log_context
from core.settings import Settings

OTLP_ENV: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""The standard variables the OTLP exporter reads by itself when Conveyor's own setting is unset."""
UNTRACED_PATHS: Final = "/health,/ready,/metrics"
"""Probes and scrapes: a span per poll would bury the requests that matter."""

_exporting: set[tuple[int, str]] = set()
_runtimes: dict[str, Runtime] = {}


def otlp_endpoint(settings: Settings) -> str | None:
    """Where spans go: Conveyor's setting, else the standard variable, else nowhere (export off)."""
    if settings.otlp_endpoint:
        return settings.otlp_endpoint
    return next((os.environ[name] for name in OTLP_ENV if os.environ.get(name)), None)


def setup_tracing(settings: Settings, *, service: str) -> TracerProvider:
    """The process's tracer provider, installed globally on first call; later calls reuse it.

    OpenTelemetry allows one global provider per process, and tests run the API and a worker in one, so
    this is idempotent: an OTLP exporter is added once per endpoint whichever component asks first.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        trace.set_tracer_provider(provider)
    export_spans(provider, settings)
    return provider


def export_spans(provider: TracerProvider, settings: Settings) -> None:
    """Send ``provider``'s spans over OTLP/HTTP when an endpoint is configured (once per endpoint)."""
    endpoint = otlp_endpoint(settings)
    if endpoint is None or (id(provider), endpoint) in _exporting:
        return
    # Imported here: the exporter pulls in requests and protobuf, which a process without export skips.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Conveyor's setting is the collector's base URL, like the standard variable; the traces path is the
    # OTLP/HTTP one. Without Conveyor's setting the exporter reads the standard variables itself.
    exporter = (
        OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        if settings.otlp_endpoint
        else OTLPSpanExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _exporting.add((id(provider), endpoint))


def instrument_api(app: FastAPI) -> None:
    """A server span per API request, the parent of whatever the request starts in Temporal."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_PATHS)


def client_interceptors() -> list[TracingInterceptor]:
    """Interceptors of every Conveyor client: the tracing one, which its workers inherit."""
    return [TracingInterceptor()]


def worker_interceptors(configured: Sequence[object]) -> list[Interceptor]:
    """What a worker adds to the client's interceptors: step telemetry, and tracing unless the client
    already traces (a client from :func:`core.temporal.connect` does; the tests' clients do not)."""
    # Tracing outermost, so the activity's span is current while the step's lines are logged.
    added: list[Interceptor] = []
    if not any(isinstance(i, TracingInterceptor) for i in configured):
        added.append(TracingInterceptor())
    added.append(StepTelemetryInterceptor())
    return added


def worker_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics on ``worker_metrics_address``; ``None`` when unset.

    One runtime per address and process: the SDK binds the port when the runtime is built.
    """
    address = settings.worker_metrics_address
    if not address:
        return None
    if address not in _runtimes:
        _runtimes[address] = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address))
        )
    return _runtimes[address]


class StepTelemetryInterceptor(Interceptor):
    """Per step activity: the log context (execution and step ids) and Conveyor's step metrics."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StepTelemetry(next)


class _StepTelemetry(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        step_id = _step_id(input.args)
        # The SDK's meter already carries activity_type (the step type), task_queue and namespace; it is a
        # no-op when the runtime has no metrics configured.
        try:
            meter = activity.metric_meter()
        except RuntimeError:  # a sync activity outside a thread pool has none
            meter = MetricMeter.noop
        started = time.monotonic()
        outcome = "failed"
        with step_log_context(
            execution_id=info.workflow_id,
            step_id=step_id,
            step_type=info.activity_type,
            attempt=info.attempt,
        ):
            try:
                result = await self.next.execute_activity(input)
                outcome = "completed"
                return result
            except asyncio.CancelledError:  # the execution was cancelled or the worker is shutting down
                outcome = "cancelled"
                raise
            finally:
                meter.create_counter(
                    "conveyor_step_attempts", "Step activity attempts, by step type and outcome"
                ).add(1, {"outcome": outcome})
                meter.create_histogram_timedelta(
                    "conveyor_step_duration", "Time a step activity attempt took", unit="ms"
                ).record(timedelta(seconds=time.monotonic() - started), {"outcome": outcome})


def _step_id(args: Sequence[Any]) -> str | None:
    """The step id of a step activity's request (every ``StepRequest`` has one); ``None`` for others."""
    step_id = getattr(args[0], "step_id", None) if args else None
    return step_id if isinstance(step_id, str) else None
