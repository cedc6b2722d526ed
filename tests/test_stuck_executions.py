"""An execution whose workflow task keeps failing says so, with Temporal's reason, everywhere: the execution
view, the list, ``/stats``, ``/metrics``, the CLI and the event stream; and it goes on when a good worker
takes over.

The failures are made by real workers on the real dev server, seen through the real API: one whose workflow
interceptor raises a plain exception on every workflow task (as a bug in workflow code would; a deadlock or
a nondeterminism fails the task the same way, with another message), and one that freezes mid-task for
longer than the task's timeout (as a stuck or dying worker process would).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from api.cli import Event, parse_sse
from core import problems
from core.settings import Settings
from core.stats import STUCK_GAUGE_TTL_S
from core.temporal import connect
from tests.conftest import api_settings
from tests.support.api import running_api
from tests.support.waiting import eventually, until
from tests.test_cli import conveyor
from tests.test_telemetry import metered, metric_names, samples
from worker import conveyor_worker
from workflows.interpreter import DefinitionWorkflow

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

BROKEN = "the interpreter is broken in this build"


class _Breaking(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        raise RuntimeError(BROKEN)


class BreakEveryWorkflowTask(Interceptor):
    """A bad release: every workflow task fails with a plain exception, never a workflow failure."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Breaking


def two_steps(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "first", "type": "transform", "with": {"value": 1}},
            {"id": "second", "type": "transform", "with": {"value": "{{ steps.first.output + 1 }}"}},
        ],
        "output": "{{ steps.second.output }}",
    }


async def start(api: httpx.AsyncClient, name: str, **body: Any) -> str:
    """Create the two-step definition ``name`` and start it; its execution id."""
    created = await api.post("/api/v1/definitions", json=two_steps(name))
    assert created.status_code == 201, created.text
    started = await api.post(f"/api/v1/definitions/{name}/executions", json=body)
    assert started.status_code == 201, started.text
    execution_id: str = started.json()["execution_id"]
    return execution_id


async def shown_problem(api: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    """The execution view's ``problem``, once it has one."""

    async def problem() -> dict[str, Any] | None:
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        found: dict[str, Any] | None = view["problem"]
        return found

    return await eventually(problem, f"the view of {execution_id} shows a problem")


async def following(api: httpx.AsyncClient, execution_id: str) -> asyncio.subprocess.Process:
    """``conveyor execution ID --follow`` in a child process, its output piped (one line per event)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_API")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "api.cli", "--api", str(api.base_url)],
        *["execution", execution_id, "--follow"],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env=env,
    )


@contextlib.asynccontextmanager
async def events_of(api: httpx.AsyncClient, execution_id: str) -> AsyncIterator[list[Event]]:
    """The execution's SSE events, read in the background into the list yielded (``stuck`` has no id)."""
    lines: list[str] = []
    received: list[Event] = []

    async def read() -> None:
        async with api.stream("GET", f"/api/v1/executions/{execution_id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines.append(line)
                if not line:
                    received[:] = list(parse_sse(lines))

    reader = asyncio.create_task(read())
    try:
        yield received
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader


async def test_a_failing_workflow_task_shows_everywhere_and_clears_when_fixed(
    temporal_env: WorkflowEnvironment, client: Client, settings: Settings, task_queue: str, tmp_path: Path
) -> None:
    name = f"stuck-{uuid.uuid4().hex[:8]}"
    broken_client, _, metrics_url = await metered(temporal_env, task_queue)
    broken = Worker(
        broken_client,
        task_queue=task_queue,
        workflows=[DefinitionWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
        interceptors=[BreakEveryWorkflowTask()],
    )
    async with (
        running_api(api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")) as api,
        broken,
    ):
        execution_id = await start(api, name, id="one")
        async with events_of(api, execution_id) as stream:
            # The execution view: Temporal's category and cause, the exception's message, the attempts.
            seen = await shown_problem(api, execution_id)
            assert seen["category"] == "WorkflowTaskFailed"
            assert seen["cause"] == "WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure"
            assert seen["message"] == f"RuntimeError: {BROKEN}"
            assert seen["failed_attempts"] >= 1 and seen["since"]

            # A start that waits for the result says why it did not come.
            again = await api.post(f"/api/v1/definitions/{name}/executions", json={"id": "one", "wait": 0.5})
            assert again.status_code == 200, again.text
            assert again.json()["problem"]["message"] == f"RuntimeError: {BROKEN}"

            # The list marks it, ?stuck=true finds it, /stats and /metrics count it.
            async def listed() -> dict[str, Any] | None:
                page = await api.get("/api/v1/executions", params={"definition": name})
                rows = page.json()["executions"]  # visibility trails a moment behind
                found: dict[str, Any] | None = rows[0]["problem"] if rows else None
                return found

            row_problem = await eventually(listed, "the list shows the problem")
            assert row_problem["category"] == "WorkflowTaskFailed"
            assert row_problem["cause"] == "WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure"
            stuck_only = await api.get("/api/v1/executions", params={"definition": name, "stuck": "true"})
            assert [r["execution_id"] for r in stuck_only.json()["executions"]] == [execution_id]
            stats = (await api.get("/api/v1/stats", params={"definition": name})).json()
            assert stats["stuck_executions"] == 1 and stats["active_executions"] == 1
            [(_, gauge)] = samples_of((await api.get("/metrics")).text, "conveyor_executions_stuck")
            assert gauge >= 1

            # The CLI, a child process talking to the API.
            shown = await conveyor(api, "execution", execution_id)
            assert shown.code == 0, shown
            assert "stuck: WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure" in shown.out
            assert BROKEN in shown.out
            listed_cli = await conveyor(api, "executions", "--definition", name, "--stuck")
            assert listed_cli.code == 0, listed_cli
            assert execution_id in listed_cli.out and "stuck:" in listed_cli.out

            # The event stream says so, with the same reason.
            await until(lambda: _having(stream, "stuck"), "the event stream sends stuck", within_s=60)
            stuck = [e for e in stream if e.type == "stuck"][-1]
            assert stuck.seq == 0 and stuck.data["message"] == f"RuntimeError: {BROKEN}"

            # The worker's own metric that the alert rule watches.
            async with httpx.AsyncClient() as http:
                scrape = (await http.get(metrics_url)).text
            failures = [
                value
                for labels, value in samples(scrape, "temporal_workflow_task_execution_failed")
                if labels.get("task_queue") == task_queue
            ]
            assert failures and failures[0] >= 1, "the worker did not count its failed workflow tasks"
            assert alert_metrics() <= metric_names(scrape) | metric_names((await api.get("/metrics")).text)

            # `conveyor execution --follow` (what `conveyor start` does) says so while it waits.
            follower = await following(api, execution_id)
            assert follower.stdout is not None
            said = ""
            async with asyncio.timeout(60):
                while "stuck" not in said:
                    said = (await follower.stdout.readline()).decode()
            assert BROKEN in said and "WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure" in said

            await broken.shutdown()
            # The fix is deployed: a good worker takes the task over and the execution goes on.
            async with conveyor_worker(client, settings):
                await until(lambda: _having(stream, "completed"), "the execution completes", within_s=90)
                types = [e.type for e in stream]
                assert types.index("stuck") < types.index("recovered") < types.index("started")
                assert "stuck" not in types[types.index("recovered") :]
                view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
                assert view["state"] == "COMPLETED" and view["output"] == 2
                assert view["problem"] is None

                async def cleared() -> bool:
                    counted = (await api.get("/api/v1/stats", params={"definition": name})).json()
                    stuck_count: int = counted["stuck_executions"]
                    return stuck_count == 0

                await until(cleared, "/stats stops counting it")
                page = await api.get("/api/v1/executions", params={"definition": name})
                assert page.json()["executions"][0]["problem"] is None

                # The follower saw it recover and complete: exit code 0, as `conveyor start` has.
                rest, _ = await asyncio.wait_for(follower.communicate(), 60)
                assert follower.returncode == 0, rest.decode()
                assert "recovered" in rest.decode() and "COMPLETED" in rest.decode()


async def _having(stream: list[Event], kind: str) -> bool:
    return any(event.type == kind for event in stream)


async def test_scrapes_of_metrics_make_one_count_of_stuck_executions_per_window(
    api: httpx.AsyncClient, temporal_metrics_url: str
) -> None:
    """``/metrics`` is public: however often it is scraped, at once or one after the other, Temporal sees
    one visibility count per ``STUCK_GAUGE_TTL_S`` for the gauge."""

    async def counts_temporal_made() -> float:
        async with httpx.AsyncClient() as http:
            scrape = (await http.get(temporal_metrics_url)).text
        return sum(
            value
            for labels, value in samples(scrape, "visibility_persistence_latency_count")
            if labels.get("operation") == "CountWorkflowExecutions"
        )

    before = await counts_temporal_made()
    began = time.monotonic()
    scrapes = [await api.get("/metrics")]
    scrapes += await asyncio.gather(*(api.get("/metrics") for _ in range(20)))
    scrapes += [await api.get("/metrics") for _ in range(20)]
    windows = 1 + (time.monotonic() - began) // STUCK_GAUGE_TTL_S  # 1 unless the machine crawls
    assert {scrape.status_code for scrape in scrapes} == {200}
    assert all(samples_of(scrape.text, "conveyor_executions_stuck") for scrape in scrapes)
    assert 1 <= await counts_temporal_made() - before <= windows


class _Hanging(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if HangTwice.hung < 2:
            HangTwice.hung += 1
            time.sleep(HANG_S)  # noqa: ASYNC251 - the worker's loop is frozen, as a stuck process's would be
        return await self.next.execute_workflow(input)


HANG_S = 12.0
"""Longer than the workflow task timeout (10 s): the server times the task out and schedules another."""


class HangTwice(Interceptor):
    """A worker that hangs on its first two workflow tasks (beyond their timeout), then works."""

    hung = 0

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Hanging


@contextlib.asynccontextmanager
async def frozen_worker(settings: Settings) -> AsyncIterator[None]:
    """A worker that freezes on its first two workflow tasks for longer than their timeout, then works.

    It runs on an event loop of its own in a thread: debug mode (no deadlock detector, which would fail the
    task instead) runs workflow code on the worker's loop, and a frozen loop must not be the test's.
    """
    HangTwice.hung = 0
    stop = threading.Event()
    polling = threading.Event()

    async def serve() -> None:
        worker = Worker(
            await connect(settings),
            task_queue=settings.task_queue,
            workflows=[DefinitionWorkflow],
            workflow_runner=UnsandboxedWorkflowRunner(),
            interceptors=[HangTwice()],
            debug_mode=True,
        )
        async with worker:
            polling.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(polling.wait, 30)
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)


async def test_a_timed_out_workflow_task_shows_until_a_task_goes_through(
    temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    name = f"hung-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=temporal_env.client.service_client.config.target_host, task_queue=task_queue
    )
    api_config = api_settings(temporal_env, task_queue, f"sqlite+aiosqlite:///{tmp_path}/api.db")
    async with running_api(api_config) as api, frozen_worker(settings):
        execution_id = await start(api, name)
        seen = await shown_problem(api, execution_id)
        assert seen["category"] == "WorkflowTaskTimedOut"
        assert seen["cause"] == "WorkflowTaskTimedOutCauseStartToClose"
        assert seen["message"] == "workflow task timed out (StartToClose)"
        assert seen["failed_attempts"] >= 1 and seen["since"]

        # The third task goes through: the execution completes and says nothing more.
        async def done() -> dict[str, Any] | None:
            view: dict[str, Any] = (await api.get(f"/api/v1/executions/{execution_id}")).json()
            return view if view["state"] == "COMPLETED" else None

        view = await eventually(done, "the execution completes after the hangs", within_s=120)
        assert view["problem"] is None and view["output"] == 2


def samples_of(exposition: str, name: str) -> list[tuple[str, float]]:
    """Unlabelled samples of ``name`` as (name, value)."""
    return [
        (sample, float(value))
        for sample, value in re.findall(rf"^({re.escape(name)}) (\S+)$", exposition, flags=re.MULTILINE)
    ]


def alert_metrics() -> set[str]:
    """The metric names the alerting rules query."""
    rules = [
        rule
        for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    return {
        token
        for rule in rules
        for token in re.findall(r"\b((?:temporal|conveyor)_[a-z0-9_]+)\b", rule["expr"])
    }


def test_alert_rules_are_loaded_and_complete() -> None:
    """Prometheus loads the rule file it is given (compose mounts it beside its config), and every rule
    names a metric, a severity and what to do."""
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    for rule_file in scrape["rule_files"]:
        assert f"./deploy/{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {"ConveyorWorkflowTaskFailures", "ConveyorExecutionsStuck"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert alert_metrics() == {"temporal_workflow_task_execution_failed", "conveyor_executions_stuck"}


@pytest.mark.parametrize(
    "path", [DEPLOY / "temporal" / "dynamicconfig.yaml", DEPLOY / "k8s" / "temporal-values.yaml"]
)
def test_deployed_temporal_reports_stuck_workflows(path: Path) -> None:
    """Every Temporal that Conveyor deploys sets the threshold the dev servers get from
    ``problems.dynamic_config_flags()``, so lists and counts see a stuck execution from its first failure."""
    document = yaml.safe_load(path.read_text())
    config = document["server"]["dynamicConfig"] if "server" in document else document
    [entry] = config[problems.PROBLEMS_TO_REPORT_SETTING]
    assert entry["value"] == problems.PROBLEMS_TO_REPORT
    assert problems.dynamic_config_flags() == [
        "--dynamic-config-value",
        f"{problems.PROBLEMS_TO_REPORT_SETTING}={problems.PROBLEMS_TO_REPORT}",
    ]
