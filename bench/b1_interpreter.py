"""B1 interpreter overhead: a 3-step definition run by ``DefinitionWorkflow`` against a hand-written workflow.

Both sides call the same ``http_request`` activity (``HttpActivities``) three times with identical
``StepRequest``s against a loopback HTTP server, on workers built with the same settings (the baseline worker
copies the config of ``worker.conveyor_worker``), against a real Temporal dev server this script starts.

    python -m bench.b1_interpreter [--n 300] [--concurrency 100] [--sequential 50] [--in-memory|--file-backed]

Per side it reports completed workflows/s with ``--concurrency`` in flight, client-seen latency p50/p99 of
runs started one at a time, server-side duration from history timestamps (WorkflowExecutionStarted to the
close event), history events per run, and where the time goes (workflow-task and activity time from
history, CPU per run of the worker process and of the dev server). Sides alternate (ABBA for the load
rounds, AB/BA pairs for the sequential runs), so drift in the server hits both equally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import httpx
from fastapi import FastAPI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.b1_baseline import BaselineInput, BaselineStep, BaselineWorkflow
from core import names
from core.settings import Settings
from tests.support.run import start as start_definition
from tests.support.target import Target, free_port, serve
from worker import conveyor_worker
from workflows.messages import ExecutionSnapshot

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


@asynccontextmanager
async def dev_server(*, file_backed: bool = False) -> AsyncIterator[WorkflowEnvironment]:
    """A fresh dev server with Conveyor's search attributes: in memory, or on a SQLite file removed after."""
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as tmp:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(TEMPORAL_CLI),
            search_attributes=list(names.SEARCH_ATTRIBUTES),
            dev_server_log_level="error",
            dev_server_extra_args=["--db-filename", str(Path(tmp) / "temporal.db")] if file_backed else [],
        )
        async with env:
            yield env


Mode = Literal["in-memory", "file-backed"]
MODES: tuple[Mode, ...] = ("in-memory", "file-backed")
INTERPRETER = "interpreter"
BASELINE = "baseline"
STEP_IDS = ("first", "second", "third")

THROUGHPUT_GOAL = 0.8
"""Interpreter throughput / baseline throughput must be at least this."""
LATENCY_GOAL = 1.2
"""Interpreter p50 latency / baseline p50 latency must be at most this."""
RUN_TIMEOUT_S = 120.0
"""A run taking longer has a failing workflow task (retried forever by Temporal): stop the benchmark."""
HISTORY_SAMPLE = 50
"""Histories fetched per side from the load phase (all sequential runs are fetched)."""


# -- the work ---------------------------------------------------------------------------------------------


def step_configs(target_url: str) -> list[tuple[str, dict[str, Any]]]:
    """The three activity calls both sides make: step id and the rendered ``with``."""
    return [(step_id, {"url": f"{target_url}/echo?step={step_id}"}) for step_id in STEP_IDS]


def definition(target_url: str) -> dict[str, Any]:
    """The Conveyor side: three ``http_request`` steps, nothing else."""
    return {
        "name": "b1-three-steps",
        "steps": [
            {"id": step_id, "type": "http_request", "with": config}
            for step_id, config in step_configs(target_url)
        ],
    }


def baseline_input(target_url: str) -> BaselineInput:
    """The baseline side: the same three calls, with the definition's default timeout and attempts."""
    return BaselineInput(steps=[BaselineStep(id=i, config=c) for i, c in step_configs(target_url)])


def target_app() -> FastAPI:
    """The loopback HTTP target, for ``uvicorn --factory`` in its own process."""
    return Target().app


@dataclass
class Side:
    """One side of the comparison: how to start one run and wait for it."""

    name: str
    start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]]
    check: Callable[[Any], bool]


def sides(client: Client, interpreter_queue: str, baseline_queue: str, target_url: str) -> list[Side]:
    """The interpreter started as the API starts it, and the baseline started plainly."""
    document = definition(target_url)
    plain = baseline_input(target_url)

    async def start_interpreter() -> WorkflowHandle[Any, Any]:
        return await start_definition(client, interpreter_queue, document)

    async def start_baseline() -> WorkflowHandle[Any, Any]:
        return await client.start_workflow(
            BaselineWorkflow.run, plain, id=f"b1-baseline/{uuid.uuid4()}", task_queue=baseline_queue
        )

    def interpreter_ok(result: Any) -> bool:
        return isinstance(result, ExecutionSnapshot) and result.state == "COMPLETED"

    def baseline_ok(result: Any) -> bool:
        return isinstance(result.output, dict) and result.output.get("status") == 200

    return [
        Side(INTERPRETER, start_interpreter, interpreter_ok),
        Side(BASELINE, start_baseline, baseline_ok),
    ]


# -- measuring --------------------------------------------------------------------------------------------


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, else a plain line every few seconds."""

    def __init__(self, enabled: bool, prefix: str) -> None:
        self.enabled = enabled
        self.prefix = prefix
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < (0.2 if self.tty else 5.0)):
            return
        self._last = now
        sys.stderr.write(f"\r\x1b[2K[{self.prefix}] {text}" if self.tty else f"[{self.prefix}] {text}\n")
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(
                f"\r\x1b[2K[{self.prefix}] {text}\n" if self.tty else f"[{self.prefix}] {text}\n"
            )
            sys.stderr.flush()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def dev_server_pid() -> int | None:
    """The pid of a ``temporal server start-dev`` this process started, on Linux; None elsewhere."""
    for pid in _descendants(os.getpid()):
        try:
            if b"start-dev" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` (all threads), or of this process when ``pid`` is None."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU used by this process (worker, client, load generator) and by the dev server."""

    server_pid: int | None
    worker_s: float = 0.0
    server_s: float = 0.0

    @asynccontextmanager
    async def measure(self) -> AsyncIterator[None]:
        worker0, server0 = cpu_seconds(None), cpu_seconds(self.server_pid)
        try:
            yield
        finally:
            self.worker_s += cpu_seconds(None) - worker0
            if self.server_pid is not None:
                self.server_s += cpu_seconds(self.server_pid) - server0


@dataclass
class RunStats:
    """One run as its history shows it (times in ms, from server event timestamps)."""

    workflow_id: str
    events: int
    server_ms: float
    workflow_tasks: int
    workflow_task_ms: float
    """Sum over workflow tasks of WorkflowTaskStarted -> WorkflowTaskCompleted (worker turnaround)."""
    workflow_task_wait_ms: float
    """Sum of WorkflowTaskScheduled -> WorkflowTaskStarted (waiting for a poller)."""
    activity_ms: float
    """Sum of ActivityTaskStarted -> ActivityTaskCompleted."""
    activity_wait_ms: float
    """Sum of ActivityTaskScheduled -> ActivityTaskStarted."""
    event_types: dict[str, int] = field(default_factory=dict)


def analyse(workflow_id: str, history: WorkflowHistory) -> RunStats:
    """Durations and counts from one closed run's history."""
    events = history.events

    def ms(event: Any) -> float:
        return float(event.event_time.ToMicroseconds()) / 1000.0

    at = {event.event_id: ms(event) for event in events}
    stats = RunStats(workflow_id, len(events), ms(events[-1]) - ms(events[0]), 0, 0.0, 0.0, 0.0, 0.0)
    for event in events:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        stats.event_types[kind] = stats.event_types.get(kind, 0) + 1
        match event.event_type:
            case EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                scheduled = event.workflow_task_started_event_attributes.scheduled_event_id
                stats.workflow_task_wait_ms += ms(event) - at[scheduled]
            case EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                stats.workflow_tasks += 1
                started = event.workflow_task_completed_event_attributes.started_event_id
                stats.workflow_task_ms += ms(event) - at[started]
            case EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                scheduled = event.activity_task_started_event_attributes.scheduled_event_id
                stats.activity_wait_ms += ms(event) - at[scheduled]
            case EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                started = event.activity_task_completed_event_attributes.started_event_id
                stats.activity_ms += ms(event) - at[started]
    return stats


async def fetch_stats(client: Client, workflow_ids: Sequence[str]) -> list[RunStats]:
    async def one(workflow_id: str) -> RunStats:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return analyse(workflow_id, history)

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


async def run_once(side: Side) -> tuple[str, float]:
    """Start one run and wait for its result; the workflow id and the client-seen latency in ms."""
    began = time.perf_counter()
    handle = await side.start()
    try:
        result = await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(
            f"{side.name} run {handle.id} did not finish in {RUN_TIMEOUT_S:g}s (failing workflow task?)"
        ) from None
    elapsed = (time.perf_counter() - began) * 1000.0
    if not side.check(result):
        raise RuntimeError(f"{side.name} run {handle.id} ended with an unexpected result: {result!r}")
    return handle.id, elapsed


@dataclass
class LoadRound:
    """One burst of runs of one side with a fixed number in flight."""

    side: str
    runs: int
    wall_s: float
    workflow_ids: list[str]
    latencies_ms: list[float]


async def load_round(side: Side, runs: int, concurrency: int, progress: Progress, label: str) -> LoadRound:
    """``runs`` runs with ``concurrency`` in flight at a time."""
    remaining = runs
    done = 0
    ids: list[str] = []
    latencies: list[float] = []

    async def lane() -> None:
        nonlocal remaining, done
        while remaining > 0:
            remaining -= 1
            workflow_id, latency = await run_once(side)
            ids.append(workflow_id)
            latencies.append(latency)
            done += 1
            progress.show(f"{label} {done}/{runs}")

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, runs))))
    return LoadRound(side.name, runs, time.perf_counter() - began, ids, latencies)


# -- results ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class SideResult:
    """Everything measured for one side in one mode."""

    side: str
    completed_load: int
    completed_sequential: int
    load_wall_s: float
    throughput_per_s: float
    load_latency_p50_ms: float
    load_latency_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    server_p50_ms: float
    server_p99_ms: float
    server_load_p50_ms: float
    events_per_run: float
    workflow_tasks_per_run: float
    workflow_task_p50_ms: float
    workflow_task_wait_p50_ms: float
    activity_p50_ms: float
    activity_wait_p50_ms: float
    worker_cpu_ms_per_run: float | None
    server_cpu_ms_per_run: float | None
    event_types: dict[str, int]
    raw_latencies_ms: list[float] = field(repr=False)
    raw_load_latencies_ms: list[float] = field(repr=False)
    raw_runs: list[RunStats] = field(repr=False)
    raw_load_runs: list[RunStats] = field(repr=False)


@dataclass
class ModeResult:
    """Both sides in one server mode, plus the ratios interpreter / baseline."""

    mode: str
    n: int
    concurrency: int
    sequential: int
    warmup: int
    sides: dict[str, SideResult]
    ratios: dict[str, float]
    goals_met: dict[str, bool]
    duration_s: float

    def table(self) -> str:
        return render_table(self)


def summarise(
    name: str,
    *,
    rounds: list[LoadRound],
    latencies: list[float],
    load_latencies: list[float],
    runs: list[RunStats],
    load_runs: list[RunStats],
    cpu: CpuMeter,
    measure_cpu_server: bool,
) -> SideResult:
    completed = sum(r.runs for r in rounds)
    wall = sum(r.wall_s for r in rounds)
    all_runs = runs + load_runs

    def p50(key: Callable[[RunStats], float], items: list[RunStats]) -> float:
        return percentile([key(r) for r in items], 50)

    event_types: dict[str, int] = {}
    if runs:
        event_types = max(runs, key=lambda r: r.events).event_types
    return SideResult(
        side=name,
        completed_load=completed,
        completed_sequential=len(latencies),
        load_wall_s=wall,
        throughput_per_s=completed / wall if wall else 0.0,
        load_latency_p50_ms=percentile(load_latencies, 50),
        load_latency_p99_ms=percentile(load_latencies, 99),
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        server_p50_ms=p50(lambda r: r.server_ms, runs),
        server_p99_ms=percentile([r.server_ms for r in runs], 99),
        server_load_p50_ms=p50(lambda r: r.server_ms, load_runs),
        events_per_run=p50(lambda r: r.events, all_runs),
        workflow_tasks_per_run=p50(lambda r: r.workflow_tasks, all_runs),
        workflow_task_p50_ms=p50(lambda r: r.workflow_task_ms, runs),
        workflow_task_wait_p50_ms=p50(lambda r: r.workflow_task_wait_ms, runs),
        activity_p50_ms=p50(lambda r: r.activity_ms, runs),
        activity_wait_p50_ms=p50(lambda r: r.activity_wait_ms, runs),
        worker_cpu_ms_per_run=cpu.worker_s * 1000.0 / completed if completed else None,
        server_cpu_ms_per_run=(
            cpu.server_s * 1000.0 / completed if completed and measure_cpu_server else None
        ),
        event_types=event_types,
        raw_latencies_ms=latencies,
        raw_load_latencies_ms=load_latencies,
        raw_runs=runs,
        raw_load_runs=load_runs,
    )


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else float("nan")


def ratios_of(interp: SideResult, base: SideResult) -> dict[str, float]:
    return {
        "throughput": _ratio(interp.throughput_per_s, base.throughput_per_s),
        "latency_p50": _ratio(interp.latency_p50_ms, base.latency_p50_ms),
        "latency_p99": _ratio(interp.latency_p99_ms, base.latency_p99_ms),
        "server_p50": _ratio(interp.server_p50_ms, base.server_p50_ms),
        "events": _ratio(interp.events_per_run, base.events_per_run),
        "workflow_task_p50": _ratio(interp.workflow_task_p50_ms, base.workflow_task_p50_ms),
        "worker_cpu_per_run": _ratio(interp.worker_cpu_ms_per_run, base.worker_cpu_ms_per_run),
    }


# -- one mode ---------------------------------------------------------------------------------------------


async def measure(
    client: Client,
    *,
    n: int = 300,
    concurrency: int = 100,
    sequential: int = 50,
    warmup: int = 20,
    target_url: str | None = None,
    mode: str = "in-memory",
    progress: bool = True,
) -> ModeResult:
    """Run B1 against ``client``'s server: warm-up, load rounds (ABBA), then sequential pairs (AB/BA).

    Starts its own workers on fresh task queues, and a loopback HTTP target in this process unless
    ``target_url`` points at one already running.
    """
    if target_url is None:
        target = Target()
        async with serve(target.app) as url:
            return await measure(
                client,
                n=n,
                concurrency=concurrency,
                sequential=sequential,
                warmup=warmup,
                target_url=url,
                mode=mode,
                progress=progress,
            )
    began = time.perf_counter()
    line = Progress(progress, mode)
    suffix = uuid.uuid4().hex[:8]
    interpreter_queue, baseline_queue = f"b1-interpreter-{suffix}", f"b1-baseline-{suffix}"
    settings = Settings(task_queue=interpreter_queue)
    async with conveyor_worker(client, settings) as interpreter_worker:
        config = interpreter_worker.config()
        config["task_queue"] = baseline_queue
        config["workflows"] = [BaselineWorkflow]
        async with Worker(**config):
            interpreter, baseline = sides(client, interpreter_queue, baseline_queue, target_url)
            by_name = {s.name: s for s in (interpreter, baseline)}

            for side in (interpreter, baseline):
                await load_round(side, warmup, concurrency, line, f"warm-up {side.name}")
                for _ in range(min(3, warmup)):
                    await run_once(side)

            server_pid = dev_server_pid()
            meters = {name: CpuMeter(server_pid) for name in by_name}
            rounds: dict[str, list[LoadRound]] = {name: [] for name in by_name}
            halves = [n // 2, n - n // 2]
            order = [(interpreter, halves[0]), (baseline, halves[0]), (baseline, halves[1])]
            order.append((interpreter, halves[1]))
            for number, (side, runs) in enumerate(order, 1):
                if runs == 0:
                    continue
                async with meters[side.name].measure():
                    finished = await load_round(
                        side, runs, concurrency, line, f"load {number}/4 {side.name} x{concurrency}"
                    )
                rounds[side.name].append(finished)

            latencies: dict[str, list[float]] = {name: [] for name in by_name}
            sequential_ids: dict[str, list[str]] = {name: [] for name in by_name}
            for i in range(sequential):
                pair = (interpreter, baseline) if i % 2 == 0 else (baseline, interpreter)
                for side in pair:
                    workflow_id, latency = await run_once(side)
                    latencies[side.name].append(latency)
                    sequential_ids[side.name].append(workflow_id)
                line.show(f"sequential {i + 1}/{sequential}")

    line.show("reading histories", force=True)
    results: dict[str, SideResult] = {}
    for name in by_name:
        load_ids = [w for r in rounds[name] for w in r.workflow_ids]
        every = max(1, len(load_ids) // HISTORY_SAMPLE)
        results[name] = summarise(
            name,
            rounds=rounds[name],
            latencies=latencies[name],
            load_latencies=[ms for r in rounds[name] for ms in r.latencies_ms],
            runs=await fetch_stats(client, sequential_ids[name]),
            load_runs=await fetch_stats(client, load_ids[::every][:HISTORY_SAMPLE]),
            cpu=meters[name],
            measure_cpu_server=server_pid is not None,
        )
    ratios = ratios_of(results[INTERPRETER], results[BASELINE])
    result = ModeResult(
        mode=mode,
        n=n,
        concurrency=concurrency,
        sequential=sequential,
        warmup=warmup,
        sides=results,
        ratios=ratios,
        goals_met={
            "throughput": ratios["throughput"] >= THROUGHPUT_GOAL,
            "latency_p50": ratios["latency_p50"] <= LATENCY_GOAL,
        },
        duration_s=time.perf_counter() - began,
    )
    line.done(f"done in {result.duration_s:.0f}s")
    return result


# -- presentation -----------------------------------------------------------------------------------------

ROWS: tuple[tuple[str, str, str], ...] = (
    ("throughput_per_s", "completed workflows/s ({c} in flight)", "{:.1f}"),
    ("load_latency_p50_ms", "latency under load p50 (ms)", "{:.0f}"),
    ("latency_p50_ms", "client latency p50, one at a time (ms)", "{:.1f}"),
    ("latency_p99_ms", "client latency p99, one at a time (ms)", "{:.1f}"),
    ("server_p50_ms", "server-side duration p50 (ms, history)", "{:.1f}"),
    ("server_load_p50_ms", "server-side duration p50 under load (ms)", "{:.0f}"),
    ("events_per_run", "history events per run", "{:.0f}"),
    ("workflow_tasks_per_run", "workflow tasks per run", "{:.0f}"),
    ("workflow_task_p50_ms", "workflow-task turnaround per run p50 (ms)", "{:.1f}"),
    ("workflow_task_wait_p50_ms", "workflow-task queue wait per run p50 (ms)", "{:.1f}"),
    ("activity_p50_ms", "activity execution per run p50 (ms)", "{:.1f}"),
    ("activity_wait_p50_ms", "activity queue wait per run p50 (ms)", "{:.1f}"),
    ("worker_cpu_ms_per_run", "worker-process CPU per run under load (ms)", "{:.1f}"),
    ("server_cpu_ms_per_run", "dev-server CPU per run under load (ms)", "{:.1f}"),
)

RATIO_ROWS: tuple[tuple[str, str, str], ...] = (
    ("throughput", "throughput", f">= {THROUGHPUT_GOAL}"),
    ("latency_p50", "client latency p50", f"<= {LATENCY_GOAL}"),
    ("latency_p99", "client latency p99", ""),
    ("server_p50", "server-side duration p50", ""),
    ("events", "history events", ""),
    ("workflow_task_p50", "workflow-task turnaround", ""),
    ("worker_cpu_per_run", "worker CPU per run", ""),
)


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def render_table(result: ModeResult) -> str:
    """A Markdown table of both sides, then the ratios with their goals."""
    interp, base = result.sides[INTERPRETER], result.sides[BASELINE]
    lines = ["| metric | interpreter | baseline |", "|---|---:|---:|"]
    for key, label, fmt in ROWS:
        lines.append(
            f"| {label.format(c=result.concurrency)} | {_cell(getattr(interp, key), fmt)} "
            f"| {_cell(getattr(base, key), fmt)} |"
        )
    lines += ["", "| ratio interpreter / baseline | value | goal | met |", "|---|---:|---|---|"]
    for key, label, goal in RATIO_ROWS:
        met = "" if key not in result.goals_met else ("yes" if result.goals_met[key] else "**no**")
        lines.append(f"| {label} | {result.ratios[key]:.2f} | {goal} | {met} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cli = subprocess.run([str(TEMPORAL_CLI), "--version"], capture_output=True, text=True, check=False)
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "temporalio": metadata.version("temporalio"),
        "temporal_cli": cli.stdout.strip(),
        "platform": platform.platform(),
    }


def write_json(result: ModeResult, meta: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"b1-{result.mode}.json"
    path.write_text(json.dumps({**meta, **asdict(result)}, indent=1, allow_nan=True) + "\n")
    return path


BEGIN, END = "<!-- b1:begin (generated by bench/b1_interpreter.py) -->", "<!-- b1:end -->"


def write_markdown() -> None:
    """Regenerate B1's tables in BENCHMARKS.md from bench/results; prose outside the markers is kept."""
    parts: list[str] = []
    for mode in MODES:
        path = RESULTS / f"b1-{mode}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        result = ModeResult(
            **{
                **{k: data[k] for k in ("mode", "n", "concurrency", "sequential", "warmup", "ratios")},
                "goals_met": data["goals_met"],
                "duration_s": data["duration_s"],
                "sides": {
                    name: SideResult(
                        **{
                            **side,
                            "raw_runs": [],
                            "raw_load_runs": [],
                        }
                    )
                    for name, side in data["sides"].items()
                },
            }
        )
        box = data["machine"]
        parts += [
            f"### {mode} dev server",
            "",
            f"- date: {data['date']}",
            machine_line(box),
            f"- command: `{data['command']}`",
            f"- runs: {result.n} per side under load (ABBA rounds of {result.n // 2}), "
            f"{result.sequential} per side one at a time (alternating), after {result.warmup} warm-up runs; "
            f"took {result.duration_s:.0f}s",
            "",
            render_table(result),
            "",
        ]
    write_section(BEGIN, END, parts, heading="B1 interpreter overhead")


def machine_line(box: dict[str, Any]) -> str:
    """The ``- machine:`` line of a recorded run, from ``machine()``."""
    return (
        f"- machine: {box['cores']} cores, {box['cpu']}; Python {box['python']}, temporalio "
        f"{box['temporalio']}, {box['temporal_cli']}"
    )


def write_section(begin: str, end: str, lines: list[str], *, heading: str, notes: str | None = None) -> None:
    """Put ``lines`` between ``begin`` and ``end`` in BENCHMARKS.md (a new ``## heading`` section the first
    time). With a ``notes`` marker, what follows it inside the section is hand-written and kept."""
    text = (
        BENCHMARKS_MD.read_text()
        if BENCHMARKS_MD.exists()
        else ("# Benchmarks\n\nRecorded results of `bench/` (ARCHITECTURE.md section 9).\n")
    )
    kept = ""
    if notes is not None and begin in text and end in text:
        inside = text.split(begin, 1)[1].split(end, 1)[0]
        if notes in inside:
            kept = inside.split(notes, 1)[1].strip("\n")
    hand = [notes, "", *([kept, ""] if kept else [])] if notes is not None else []
    section = "\n".join([begin, "", *lines, *hand, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        BENCHMARKS_MD.write_text(head + section + rest.split(end, 1)[1])
    else:
        BENCHMARKS_MD.write_text(text.rstrip("\n") + f"\n\n## {heading}\n\n" + section + "\n")


# -- entry point ------------------------------------------------------------------------------------------


@asynccontextmanager
async def target_process() -> AsyncIterator[str]:
    """The loopback HTTP target in its own process, so its CPU is not counted as the worker's."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "uvicorn", "--factory", "bench.b1_interpreter:target_app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"),
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                if process.returncode is not None:
                    raise RuntimeError("the HTTP target exited")
                try:
                    if (await http.get(f"{url}/text")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the HTTP target did not start")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def run_mode(mode: Mode, args: argparse.Namespace, target_url: str) -> ModeResult:
    async with dev_server(file_backed=mode == "file-backed") as env:
        return await measure(
            env.client,
            n=args.n,
            concurrency=args.concurrency,
            sequential=args.sequential,
            warmup=args.warmup,
            target_url=target_url,
            mode=mode,
            progress=not args.quiet,
        )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300, help="runs per side under load (default 300)")
    parser.add_argument("--concurrency", type=int, default=100, help="in flight under load (default 100)")
    parser.add_argument("--sequential", type=int, default=50, help="one-at-a-time runs per side (default 50)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up runs per side (default 20)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--in-memory", action="store_true", help="only the in-memory dev server")
    only.add_argument("--file-backed", action="store_true", help="only the file-backed (SQLite) dev server")
    parser.add_argument(
        "--pycache",
        metavar="DIR",
        help="write and use bytecode under DIR even if PYTHONDONTWRITEBYTECODE is set (the sandbox "
        "re-imports workflow modules on every run and, without bytecode, compiles them every time)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args(argv)
    # As worker.py does: the sandbox reloads workflow modules per run, so bytecode saves a compile each time.
    sys.dont_write_bytecode = False
    if args.pycache:
        sys.pycache_prefix = str(ROOT / args.pycache)  # ROOT / an absolute path is that path
    modes: list[Mode] = ["in-memory"] if args.in_memory else ["file-backed"] if args.file_backed else [*MODES]
    command = " ".join(["python -m bench.b1_interpreter", *(argv if argv is not None else sys.argv[1:])])
    meta_common = {"machine": machine(), "command": command.strip()}
    await run_and_record(
        "B1 interpreter overhead",
        modes,
        lambda mode, target_url: run_mode(mode, args, target_url),
        meta_common,
        write_json,
        write_markdown,
        write=not args.no_write,
    )
    return 0


class _Tabled(Protocol):
    def table(self) -> str: ...


R = TypeVar("R", bound=_Tabled)


async def run_and_record(
    title: str,
    modes: Sequence[Mode],
    run: Callable[[Mode, str], Awaitable[R]],
    meta: dict[str, Any],
    write_json: Callable[[R, dict[str, Any]], Path],
    write_markdown: Callable[[], None],
    *,
    write: bool,
) -> None:
    """Run each mode against one loopback target, print its table, and record results and BENCHMARKS.md."""
    async with target_process() as target_url:
        for mode in modes:
            result = await run(mode, target_url)
            print(f"\n{title}, {mode} dev server\n")
            print(result.table())
            print()
            if write:
                date = datetime.now(UTC).astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
                path = write_json(result, {**meta, "date": date})
                print(f"raw results: {path.relative_to(ROOT)}")
    if write:
        write_markdown()
        print(f"tables: {BENCHMARKS_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
