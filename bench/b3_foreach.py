"""B3 foreach fan-out: a ``foreach`` over 10,000 items (parallelism 100) against a hand-written fan-out.

The Conveyor side is one definition whose ``foreach`` runs ONE activity step per item; ``DefinitionWorkflow``
runs lists longer than ``batch_size`` (100) as child workflows of 100 items each, several at once
(parallelism 100: four children of 25 in flight, the next started as one ends), and splits a list of more
than 100 batches into parts of 100 batches, so no history grows with the list. The baseline
(``bench.b3_baseline``) is what a Temporal user would write: a parent keeping the same four children of 100
items in flight (a sliding window), each calling the same activity over its batch, 100 calls in flight
overall.

    python -m bench.b3_foreach [--items 10000] [--parallelism 100] [--body http|log]
                               [--in-memory|--file-backed]

B3 proper is ``--items 100000``: ten parts of 100 batches on the interpreter side, 1,000 batches from one
parent on the baseline side (about 20 minutes in all on a quiet 2-core machine).

The body is ``http_request`` against the loopback target's ``/echo`` (in its own process, as in B1) or
``notification`` with channel ``log`` (no I/O at all). Both sides keep the same small value per item (the
HTTP status, the log message) through the step's ``output``, so neither ships 10,000 response bodies through
its parent's history. Per side it reports wall time, items/s, the parent's history length, the largest
child history, the number of workflow executions, and checks every history (via ``fetch_history``) for
the history limit (no execution over ~10,000 events), failed workflow tasks and terminations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Worker

from bench.b1_interpreter import (
    RESULTS,
    CpuMeter,
    Progress,
    _descendants,
    cpu_seconds,
    dev_server,
    dev_server_pid,
    machine,
    machine_line,
    run_and_record,
    write_section,
)
from bench.b3_baseline import (
    STEP_ID,
    BaselineBatchWorkflow,
    BaselineInput,
    BaselineParentWorkflow,
    BaselineResult,
    BaselineWork,
)
from core.settings import Settings
from tests.support.run import start as start_definition
from tests.support.target import Target, serve
from worker import conveyor_worker
from workflows.messages import ExecutionSnapshot

Mode = Literal["in-memory", "file-backed"]
MODES: tuple[Mode, ...] = ("in-memory", "file-backed")
Body = Literal["http", "log"]
BODIES: tuple[Body, ...] = ("http", "log")
INTERPRETER = "interpreter"
BASELINE = "baseline"
FOREACH_ID = "each"
BATCH_SIZE = 100
"""Items per child workflow on both sides (the interpreter's default ``batch_size``)."""
HISTORY_LIMIT = 10_000
"""No execution may have this many events (Temporal warns at 10,240 and fails a run at 51,200)."""
RUN_TIMEOUT_S = 1800.0
"""A side taking longer is stuck (e.g. a workflow task failing forever): stop the benchmark."""
RESULT_PATH = RESULTS / "b3.json"

Starter = Callable[[], Awaitable[WorkflowHandle[Any, Any]]]
"""Starts one side's run over the whole list."""
Checker = Callable[[Any], tuple[int, bool]]
"""From a run's result: items with a value, and whether all values are the expected ones."""


# -- the work ---------------------------------------------------------------------------------------------


def body_step(body: Body, target_url: str) -> dict[str, Any]:
    """The loop body: one activity step, keeping one small value per item as its output."""
    if body == "http":
        return {
            "id": STEP_ID,
            "type": "http_request",
            "with": {"url": f"{target_url}/echo?item={{{{ item }}}}"},
            "output": "{{ output.status }}",
        }
    return {
        "id": STEP_ID,
        "type": "notification",
        "with": {"channel": "log", "message": "item {{ item }}"},
        "output": "{{ output.message }}",
    }


def definition(body: Body, target_url: str, parallelism: int) -> dict[str, Any]:
    """The Conveyor side: one ``foreach`` over ``input.items`` with the one-step body."""
    return {
        "name": "b3-foreach",
        "steps": [
            {
                "id": FOREACH_ID,
                "type": "foreach",
                "items": "{{ input.items }}",
                "parallelism": parallelism,
                "batch_size": BATCH_SIZE,
                "steps": [body_step(body, target_url)],
            }
        ],
    }


def baseline_work(body: Body, target_url: str) -> BaselineWork:
    """The baseline side: the same activity with the same rendered ``with``, keeping the same value."""
    if body == "http":
        return BaselineWork("http_request", {"url": f"{target_url}/echo?item={{item}}"}, keep="status")
    return BaselineWork("notification", {"channel": "log", "message": "item {item}"}, keep="message")


def expected(body: Body, items: Sequence[int]) -> list[Any]:
    """The per-item values both sides must return, in order."""
    return [200] * len(items) if body == "http" else [f"item {i}" for i in items]


# -- histories --------------------------------------------------------------------------------------------


@dataclass
class HistoryStats:
    """One execution as its history shows it."""

    workflow_id: str
    events: int
    bytes: int
    workflow_tasks: int
    workflow_task_failures: int
    workflow_task_timeouts: int
    activities_completed: int
    activity_failures: int
    children_started: list[str]
    close: str
    duration_s: float


def analyse(workflow_id: str, history: WorkflowHistory) -> HistoryStats:
    events = history.events
    counts: dict[int, int] = {}
    children: list[str] = []
    for event in events:
        counts[event.event_type] = counts.get(event.event_type, 0) + 1
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            children.append(
                event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            )
    first, last = events[0].event_time, events[-1].event_time
    return HistoryStats(
        workflow_id=workflow_id,
        events=len(events),
        bytes=sum(event.ByteSize() for event in events),
        workflow_tasks=counts.get(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0),
        workflow_task_failures=counts.get(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, 0),
        workflow_task_timeouts=counts.get(EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, 0),
        activities_completed=counts.get(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 0),
        activity_failures=counts.get(EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, 0)
        + counts.get(EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, 0),
        children_started=children,
        close=EventType.Name(events[-1].event_type).removeprefix("EVENT_TYPE_"),
        duration_s=(last.ToMicroseconds() - first.ToMicroseconds()) / 1e6,
    )


async def fetch_tree(client: Client, workflow_id: str) -> list[HistoryStats]:
    """The execution and every child it started (recursively), each from its full history."""
    found: list[HistoryStats] = []
    level = [workflow_id]
    gate = asyncio.Semaphore(20)

    async def one(wid: str) -> HistoryStats:
        async with gate:
            return analyse(wid, await client.get_workflow_handle(wid).fetch_history())

    while level:
        stats = list(await asyncio.gather(*(one(w) for w in level)))
        found += stats
        level = [child for s in stats for child in s.children_started]
    return found


def target_pid() -> int | None:
    """The pid of the loopback HTTP target when it runs in its own process (``target_process``)."""
    for pid in _descendants(os.getpid()):
        try:
            if b"bench.b1_interpreter:target_app" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


# -- one side ---------------------------------------------------------------------------------------------


@dataclass
class SideResult:
    """One side's run of the whole list."""

    side: str
    items: int
    completed_items: int
    results_correct: bool
    wall_s: float
    items_per_s: float
    parent_events: int
    parent_bytes: int
    parent_workflow_tasks: int
    largest_child_events: int
    largest_child_bytes: int
    child_events_p50: float
    executions: int
    total_events: int
    activities_completed: int
    workflow_task_failures: int
    workflow_task_timeouts: int
    activity_failures: int
    max_events: int
    history_limit_ok: bool
    not_completed: list[str]
    child_duration_p50_s: float
    worker_cpu_s: float
    server_cpu_s: float | None
    target_cpu_s: float | None
    raw_histories: list[HistoryStats] = field(repr=False)


async def watch(
    client: Client, side: str, workflow_id: str, batches: int, began: float, line: Progress
) -> None:
    """Redraw ``side: k children done (N batches), t s`` from visibility until cancelled (the interpreter's
    children include the parts a list of more than 100 batches is split into)."""
    query = f"WorkflowId STARTS_WITH '{workflow_id}/' AND ExecutionStatus = 'Completed'"
    while True:
        try:
            done = (await client.count_workflows(query)).count
        except Exception:  # visibility hiccups must not break the run
            done = -1
        shown = "?" if done < 0 else str(done)
        line.show(f"{side}: {shown} children done ({batches} batches), {time.perf_counter() - began:.0f}s")
        await asyncio.sleep(1.0)


async def run_side(
    client: Client,
    side: str,
    handle_factory: Starter,
    check: Checker,
    items: int,
    line: Progress,
    server_pid: int | None,
) -> SideResult:
    """Start one side's run, wait for it with a progress line, then read every history it made."""
    meter = CpuMeter(server_pid)
    target = target_pid() if server_pid is not None else None
    target0 = cpu_seconds(target) if target is not None else 0.0
    batches = -(-items // BATCH_SIZE) if items > BATCH_SIZE else 0
    async with meter.measure():
        began = time.perf_counter()
        handle: WorkflowHandle[Any, Any] = await handle_factory()
        watcher = asyncio.create_task(watch(client, side, handle.id, batches, began, line))
        try:
            result = await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"{side} run {handle.id} did not finish in {RUN_TIMEOUT_S:g}s") from None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        wall = time.perf_counter() - began
    target_cpu = cpu_seconds(target) - target0 if target is not None else None
    line.show(f"{side}: done in {wall:.1f}s, reading histories", force=True)
    completed, correct = check(result)
    tree = await fetch_tree(client, handle.id)
    parent, children = tree[0], tree[1:]
    child_events = sorted(c.events for c in children)
    child_durations = sorted(c.duration_s for c in children)
    largest = max(children, key=lambda c: c.events, default=None)
    max_events = max(s.events for s in tree)
    return SideResult(
        side=side,
        items=items,
        completed_items=completed,
        results_correct=correct,
        wall_s=wall,
        items_per_s=items / wall if wall else 0.0,
        parent_events=parent.events,
        parent_bytes=parent.bytes,
        parent_workflow_tasks=parent.workflow_tasks,
        largest_child_events=largest.events if largest else 0,
        largest_child_bytes=largest.bytes if largest else 0,
        child_events_p50=child_events[len(child_events) // 2] if child_events else 0.0,
        executions=len(tree),
        total_events=sum(s.events for s in tree),
        activities_completed=sum(s.activities_completed for s in tree),
        workflow_task_failures=sum(s.workflow_task_failures for s in tree),
        workflow_task_timeouts=sum(s.workflow_task_timeouts for s in tree),
        activity_failures=sum(s.activity_failures for s in tree),
        max_events=max_events,
        history_limit_ok=max_events < HISTORY_LIMIT,
        not_completed=[s.workflow_id for s in tree if s.close != "WORKFLOW_EXECUTION_COMPLETED"],
        child_duration_p50_s=child_durations[len(child_durations) // 2] if child_durations else 0.0,
        worker_cpu_s=meter.worker_s,
        server_cpu_s=meter.server_s if server_pid is not None else None,
        target_cpu_s=target_cpu,
        raw_histories=tree,
    )


# -- one mode ---------------------------------------------------------------------------------------------


@dataclass
class ModeResult:
    """Both sides on one dev server, plus interpreter / baseline ratios."""

    mode: str
    items: int
    parallelism: int
    body: str
    batch_size: int
    order: list[str]
    sides: dict[str, SideResult]
    ratios: dict[str, float]
    duration_s: float

    def table(self) -> str:
        return render_table(self)


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else float("nan")


async def measure(
    client: Client,
    *,
    items: int = 10_000,
    parallelism: int = 100,
    body: Body = "http",
    target_url: str | None = None,
    warmup: int = 200,
    mode: str = "in-memory",
    baseline_first: bool = False,
    progress: bool = True,
) -> ModeResult:
    """Run B3 against ``client``'s server: a small warm-up per side, then each side over ``items`` once.

    Starts its own workers (the baseline's built from ``conveyor_worker``'s config) on fresh task queues,
    and a loopback HTTP target in this process unless ``target_url`` points at one already running.
    """
    if target_url is None and body == "http":
        target = Target()
        async with serve(target.app) as url:
            return await measure(
                client,
                items=items,
                parallelism=parallelism,
                body=body,
                target_url=url,
                warmup=warmup,
                mode=mode,
                baseline_first=baseline_first,
                progress=progress,
            )
    url = target_url or ""
    began = time.perf_counter()
    line = Progress(progress, f"b3 {mode}")
    suffix = uuid.uuid4().hex[:8]
    interpreter_queue, baseline_queue = f"b3-interpreter-{suffix}", f"b3-baseline-{suffix}"
    async with conveyor_worker(client, Settings(task_queue=interpreter_queue)) as interpreter_worker:
        config = interpreter_worker.config()
        config["task_queue"] = baseline_queue
        config["workflows"] = [BaselineParentWorkflow, BaselineBatchWorkflow]
        async with Worker(**config):
            document = definition(body, url, parallelism)
            work = baseline_work(body, url)

            def starters(values: list[int]) -> dict[str, tuple[Starter, Checker]]:
                want = expected(body, values)

                async def interpreter() -> WorkflowHandle[Any, Any]:
                    return await start_definition(client, interpreter_queue, document, {"items": values})

                async def baseline() -> WorkflowHandle[Any, Any]:
                    return await client.start_workflow(
                        BaselineParentWorkflow.run,
                        BaselineInput(
                            work=work, items=values, parallelism=parallelism, batch_size=BATCH_SIZE
                        ),
                        id=f"b3-baseline/{uuid.uuid4()}",
                        task_queue=baseline_queue,
                    )

                def interpreter_check(result: Any) -> tuple[int, bool]:
                    if not isinstance(result, ExecutionSnapshot) or result.state != "COMPLETED":
                        raise RuntimeError(f"interpreter run ended with {result!r:.300}")
                    output = result.output or {}
                    got = output.get("results") or []
                    done = sum(1 for value in got if value is not None)
                    right = got == want and not output.get("failed") and output.get("count") == len(values)
                    return done, right

                def baseline_check(result: Any) -> tuple[int, bool]:
                    if not isinstance(result, BaselineResult):
                        raise RuntimeError(f"baseline run ended with {result!r:.300}")
                    done = sum(1 for value in result.results if value is not None)
                    return done, result.results == want and result.count == len(values)

                return {
                    INTERPRETER: (interpreter, interpreter_check),
                    BASELINE: (baseline, baseline_check),
                }

            order = [BASELINE, INTERPRETER] if baseline_first else [INTERPRETER, BASELINE]
            if warmup:
                small = starters(list(range(warmup)))
                for name in order:
                    start, check = small[name]
                    await run_side(client, f"warm-up {name}", start, check, warmup, line, None)
            server_pid = dev_server_pid()
            full = starters(list(range(items)))
            results: dict[str, SideResult] = {}
            for name in order:
                start, check = full[name]
                results[name] = await run_side(client, name, start, check, items, line, server_pid)
    interp, base = results[INTERPRETER], results[BASELINE]
    result = ModeResult(
        mode=mode,
        items=items,
        parallelism=parallelism,
        body=body,
        batch_size=BATCH_SIZE,
        order=order,
        sides={INTERPRETER: interp, BASELINE: base},
        ratios={
            "wall_time": _ratio(interp.wall_s, base.wall_s),
            "items_per_s": _ratio(interp.items_per_s, base.items_per_s),
            "parent_events": _ratio(interp.parent_events, base.parent_events),
            "largest_child_events": _ratio(interp.largest_child_events, base.largest_child_events),
            "total_events": _ratio(interp.total_events, base.total_events),
            "worker_cpu": _ratio(interp.worker_cpu_s, base.worker_cpu_s),
            "server_cpu": _ratio(interp.server_cpu_s, base.server_cpu_s),
        },
        duration_s=time.perf_counter() - began,
    )
    line.done(f"done in {result.duration_s:.0f}s")
    return result


# -- presentation -----------------------------------------------------------------------------------------

ROWS: tuple[tuple[str, str, str], ...] = (
    ("completed_items", "items completed", "{:d}"),
    ("wall_s", "wall time (s)", "{:.1f}"),
    ("items_per_s", "items/s", "{:.0f}"),
    ("parent_events", "parent history events", "{:d}"),
    ("parent_bytes", "parent history size (KB)", "kb"),
    ("largest_child_events", "largest child history events", "{:d}"),
    ("child_events_p50", "child history events p50", "{:.0f}"),
    ("largest_child_bytes", "largest child history size (KB)", "kb"),
    ("executions", "workflow executions", "{:d}"),
    ("total_events", "history events, all executions", "{:d}"),
    ("activities_completed", "activities completed", "{:d}"),
    ("child_duration_p50_s", "child run time p50 (s, history)", "{:.2f}"),
    ("worker_cpu_s", "worker-process CPU (s)", "{:.1f}"),
    ("server_cpu_s", "dev-server CPU (s)", "{:.1f}"),
    ("target_cpu_s", "HTTP-target CPU (s)", "{:.1f}"),
    ("max_events", "most events in one execution", "{:d}"),
    ("workflow_task_failures", "failed workflow tasks", "{:d}"),
    ("workflow_task_timeouts", "timed-out workflow tasks (e.g. a starved sticky worker)", "{:d}"),
)

RATIO_ROWS: tuple[tuple[str, str], ...] = (
    ("wall_time", "wall time"),
    ("items_per_s", "items/s"),
    ("parent_events", "parent history events"),
    ("largest_child_events", "largest child history events"),
    ("total_events", "history events, all executions"),
    ("worker_cpu", "worker CPU"),
    ("server_cpu", "dev-server CPU"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if fmt == "kb":
        return f"{value / 1024:.0f}"
    return fmt.format(value)


def render_table(result: ModeResult) -> str:
    interp, base = result.sides[INTERPRETER], result.sides[BASELINE]
    lines = ["| metric | interpreter | baseline |", "|---|---:|---:|"]
    for key, label, fmt in ROWS:
        lines.append(f"| {label} | {_cell(getattr(interp, key), fmt)} | {_cell(getattr(base, key), fmt)} |")
    ok = {
        name: "yes" if s.history_limit_ok and not s.not_completed and s.results_correct else "**no**"
        for name, s in result.sides.items()
    }
    lines.append(
        f"| all executions completed, < {HISTORY_LIMIT:,} events, results correct "
        f"| {ok[INTERPRETER]} | {ok[BASELINE]} |"
    )
    lines += ["", "| ratio interpreter / baseline | value |", "|---|---:|"]
    for key, label in RATIO_ROWS:
        lines.append(f"| {label} | {result.ratios[key]:.2f} |")
    return "\n".join(lines)


def write_json(result: ModeResult, meta: dict[str, Any]) -> Path:
    """Store this mode's result in bench/results/b3.json, keeping the other mode's."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if RESULT_PATH.exists():
        data = json.loads(RESULT_PATH.read_text())
    runs = data.get("runs", {})
    runs[result.mode] = {**meta, **asdict(result)}
    RESULT_PATH.write_text(json.dumps({"runs": runs}, indent=1, allow_nan=True) + "\n")
    return RESULT_PATH


BEGIN, END = "<!-- b3:begin -->", "<!-- b3:end -->"
NOTES = "<!-- b3:notes (hand-written, kept when the tables are regenerated) -->"


def _side_from(data: dict[str, Any]) -> SideResult:
    return SideResult(**{"target_cpu_s": None, "workflow_task_timeouts": 0, **data, "raw_histories": []})


def write_markdown() -> None:
    """Regenerate B3's tables in BENCHMARKS.md from bench/results/b3.json.

    Text outside the markers, and the notes between ``NOTES`` and the end marker, are kept.
    """
    parts: list[str] = [
        "Generated by `bench/b3_foreach.py` from `bench/results/b3.json`; the notes at the end are written "
        "by hand.",
        "",
    ]
    runs = json.loads(RESULT_PATH.read_text())["runs"] if RESULT_PATH.exists() else {}
    for mode in MODES:
        data = runs.get(mode)
        if data is None:
            continue
        result = ModeResult(
            **{k: data[k] for k in ("mode", "items", "parallelism", "body", "batch_size", "order", "ratios")},
            duration_s=data["duration_s"],
            sides={name: _side_from(side) for name, side in data["sides"].items()},
        )
        box = data["machine"]
        body = (
            "`http_request` GET of the loopback target's `/echo`"
            if result.body == "http"
            else ("`notification` to channel `log`")
        )
        parts += [
            f"### {mode} dev server",
            "",
            f"- date: {data['date']}",
            machine_line(box),
            f"- command: `{data['command']}`",
            f"- work: {result.items:,} items, parallelism {result.parallelism}, child batches of "
            f"{result.batch_size}, body one {body} per item; sides run one after the other "
            f"({' then '.join(result.order)}) after a {data.get('warmup', 0)}-item warm-up each; "
            f"took {result.duration_s:.0f}s",
            "",
            render_table(result),
            "",
        ]
    write_section(BEGIN, END, parts, heading="B3 foreach fan-out", notes=NOTES)


# -- entry point ------------------------------------------------------------------------------------------


async def run_mode(mode: Mode, args: argparse.Namespace, target_url: str) -> ModeResult:
    async with dev_server(file_backed=mode == "file-backed") as env:
        return await measure(
            env.client,
            items=args.items,
            parallelism=args.parallelism,
            body=args.body,
            target_url=target_url,
            warmup=args.warmup,
            mode=mode,
            baseline_first=args.baseline_first,
            progress=not args.quiet,
        )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000, help="items in the list (default 10000)")
    parser.add_argument("--parallelism", type=int, default=100, help="items in flight (default 100)")
    parser.add_argument("--body", choices=BODIES, default="http", help="the loop body's step (default http)")
    parser.add_argument("--warmup", type=int, default=200, help="items of the warm-up run per side")
    parser.add_argument("--baseline-first", action="store_true", help="run the baseline side first")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--in-memory", action="store_true", help="the in-memory dev server (the default)")
    only.add_argument("--file-backed", action="store_true", help="the file-backed (SQLite) dev server")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args(argv)
    # As worker.py does: the sandbox reloads workflow modules per run, so bytecode saves a compile each time.
    sys.dont_write_bytecode = False
    # One mode by default (in-memory), to keep the default run near five minutes on a 2-core machine.
    modes: list[Mode] = ["file-backed"] if args.file_backed else ["in-memory"]
    command = " ".join(["python -m bench.b3_foreach", *(argv if argv is not None else sys.argv[1:])])
    meta = {"machine": machine(), "command": command.strip(), "warmup": args.warmup}
    await run_and_record(
        "B3 foreach fan-out",
        modes,
        lambda mode, target_url: run_mode(mode, args, target_url),
        meta,
        write_json,
        write_markdown,
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
