"""B4 entities: 10,000 open task entities with running SLA timers, against a hand-written minimal entity.

Per side, on a fresh real Temporal dev server (this script starts it), with a worker in this process:

1. create ``--entities`` task entities, ``--concurrency`` at a time (Conveyor:
   ``core.entities.create_entity``, the API's code path without HTTP, with a real SQLite store; baseline:
   ``start_workflow``);
2. move each to ``in_progress``, which starts its SLA timer (8 h, the ``general`` default: none fires);
3. with every entity open and its timer running, read the RSS of this process (worker + load generator)
   and of the dev server;
4. move each to ``completed`` and wait until every entity workflow has closed (Conveyor's also write their
   SLA records and run the automation rules on each transition first).

    python -m bench.b4_entities [--entities 10000] [--concurrency 200] [--file-backed] [--no-baseline]

The baseline (``bench.b4_baseline``) is what the same job takes hand-written: state, an update with a
validator, a timer; no lifecycle document, permissions, SLA records or automations. Absolute numbers are the
result; the ratios only say what Conveyor's extras cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError
from temporalio.worker import Worker

from bench.b1_interpreter import (
    RESULTS,
    Progress,
    dev_server,
    dev_server_pid,
    machine,
    machine_line,
    write_section,
)
from bench.b4_baseline import BASELINE_WORKFLOW, BaselineEntityWorkflow, BaselineMove, BaselineStart
from core import entities, names
from core.db import create_engine, migrate, session_factory
from core.settings import Settings
from worker import conveyor_worker
from workflows.entity_messages import TransitionRequest
from workflows.lifecycles import ADMIN_ROLE, Actor

CONVEYOR = "conveyor"
BASELINE = "baseline"
RESULT_PATH = RESULTS / "b4.json"
ACTOR = Actor.of_role("b4", ADMIN_ROLE)
CLOSE_TIMEOUT_S = 600.0
"""Entities still open this long after their last completion are reported as left running."""


def rss_mb(pid: int | None) -> float:
    """Resident set size of ``pid`` (this process when None) in MiB, from /proc; 0 where unreadable."""
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class SideResult:
    """One side's numbers."""

    side: str
    entities: int
    create_s: float
    creates_per_s: float
    start_tracking_s: float
    completed_s: float
    """From the first ``completed`` request until every entity workflow has closed."""
    transitions_per_s: float
    worker_rss_mb: float
    """This process (worker, client and load generator) with every entity open and its timer running."""
    worker_rss_before_mb: float
    server_rss_mb: float
    server_rss_before_mb: float
    open_with_timer: int
    """Entities the server listed as running in ``in_progress`` at the memory reading."""
    errors: int
    still_running: int
    sample_history_events: int
    error_samples: list[str] = field(default_factory=list)


@dataclass
class B4Result:
    entities: int
    concurrency: int
    mode: str
    sides: dict[str, SideResult]
    duration_s: float

    def table(self) -> str:
        rows = [
            ("creates_per_s", "entities created / s", "{:.0f}"),
            ("create_s", f"create {self.entities} (s)", "{:.1f}"),
            ("start_tracking_s", "all to in_progress, timers running (s)", "{:.1f}"),
            ("completed_s", "all to completed and closed (s)", "{:.1f}"),
            ("transitions_per_s", "completions / s", "{:.0f}"),
            ("worker_rss_mb", "worker process RSS, all open (MiB)", "{:.0f}"),
            ("worker_rss_before_mb", "worker process RSS before (MiB)", "{:.0f}"),
            ("server_rss_mb", "dev server RSS, all open (MiB)", "{:.0f}"),
            ("server_rss_before_mb", "dev server RSS before (MiB)", "{:.0f}"),
            ("open_with_timer", "open in_progress entities at the reading", "{}"),
            ("sample_history_events", "history events of one entity", "{}"),
            ("errors", "failed requests", "{}"),
            ("still_running", "workflows left running", "{}"),
        ]
        names_ = [s for s in (CONVEYOR, BASELINE) if s in self.sides]
        lines = ["| | " + " | ".join(names_) + " |", "|---|" + "---:|" * len(names_)]
        for key, label, fmt in rows:
            cells = [fmt.format(getattr(self.sides[s], key)) for s in names_]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


async def _bounded(
    count: int, concurrency: int, work: Callable[[int], Awaitable[None]], line: Progress, label: str
) -> float:
    """Run ``work(i)`` for every i with ``concurrency`` in flight; returns the wall time."""
    queue = iter(range(count))
    done = 0
    began = time.perf_counter()

    async def lane() -> None:
        nonlocal done
        for i in queue:
            await work(i)
            done += 1
            line.show(f"{label} {done}/{count}")

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    line.done(f"{label} {count} in {time.perf_counter() - began:.1f}s")
    return time.perf_counter() - began


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(f"{type(exc).__name__}: {exc}")


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _settled_count(client: Client, query: str, expected: int) -> int:
    """The count once visibility has caught up with ``expected`` (or after a minute of trying)."""
    deadline = time.monotonic() + 60
    while True:
        found = await _count(client, query)
        if found >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def _wait_closed(client: Client, query: str, line: Progress, label: str) -> int:
    deadline = time.monotonic() + CLOSE_TIMEOUT_S
    while True:
        running = await _count(client, f"{query} AND ExecutionStatus = 'Running'")
        line.show(f"{label}: {running} still running")
        if running == 0 or time.monotonic() > deadline:
            return running
        await asyncio.sleep(0.5)


async def measure_side(
    client: Client,
    side: str,
    *,
    entities_n: int,
    concurrency: int,
    store_url: str,
    progress: bool = True,
    server_pid: int | None = None,
) -> SideResult:
    """Run the four phases for one side on ``client``'s server, with a worker in this process."""
    line = Progress(progress, f"b4 {side}")
    queue = f"b4-{side}-{uuid.uuid4().hex[:8]}"
    settings = Settings(task_queue=queue, database_url=store_url)
    engine = create_engine(store_url)
    await migrate(engine)
    sessions = session_factory(engine)
    errors = _Errors()
    ids = [f"b4-{uuid.uuid4().hex[:12]}" for _ in range(entities_n)]
    worker_before, server_before = rss_mb(None), rss_mb(server_pid)
    try:
        async with AsyncExitStack() as running:
            conveyor = await running.enter_async_context(conveyor_worker(client, settings))
            if side == BASELINE:
                # The baseline worker copies the Conveyor worker's config: same sandbox, same limits.
                config = conveyor.config()
                config["task_queue"] = baseline_queue = f"{queue}-baseline"
                config["workflows"] = [BaselineEntityWorkflow]
                config["activities"] = []
                await running.enter_async_context(Worker(**config))
            if side == CONVEYOR:
                query = f"{entities.entity_query('task')} AND TaskQueue = '{queue}'"

                created_ids: list[str] = []

                async def create_recording(i: int) -> None:
                    async with sessions() as session:
                        try:
                            made = await entities.create_entity(
                                session,
                                client,
                                task_queue=queue,
                                entity_type="task",
                                data={"title": f"b4 {i}", "task_type": "general"},
                                actor=ACTOR,
                            )
                        except Exception as exc:
                            errors.add(exc)
                            return
                    created_ids.append(made.entity.id)

                async def move(i: int, target: str) -> None:
                    if i >= len(created_ids):
                        return
                    try:
                        await entities.transition_entity(
                            client,
                            entity_type="task",
                            entity_id=created_ids[i],
                            request=TransitionRequest(
                                target_state=target,
                                actor=ACTOR.name,
                                role=ACTOR.role,
                                permissions=list(ACTOR.permissions),
                            ),
                        )
                    except Exception as exc:
                        errors.add(exc)

                create_s = await _bounded(entities_n, concurrency, create_recording, line, "create")
                sample = entities.workflow_id("task", created_ids[0]) if created_ids else ""
            else:
                query = f"WorkflowType = '{BASELINE_WORKFLOW}' AND TaskQueue = '{baseline_queue}'"

                async def create_recording(i: int) -> None:
                    try:
                        await client.start_workflow(
                            BASELINE_WORKFLOW,
                            BaselineStart(),
                            id=f"b4base/{ids[i]}",
                            task_queue=baseline_queue,
                            search_attributes=TypedSearchAttributes(
                                [SearchAttributePair(names.SA_STATE, "new")]
                            ),
                        )
                    except RPCError as exc:
                        errors.add(exc)

                async def move(i: int, target: str) -> None:
                    try:
                        await client.get_workflow_handle(f"b4base/{ids[i]}").execute_update(
                            names.UPDATE_TRANSITION, BaselineMove(target), result_type=str
                        )
                    except (RPCError, WorkflowUpdateFailedError) as exc:
                        errors.add(exc)

                create_s = await _bounded(entities_n, concurrency, create_recording, line, "create")
                sample = f"b4base/{ids[0]}"

            tracking_s = await _bounded(
                entities_n, concurrency, lambda i: move(i, "in_progress"), line, "in_progress"
            )
            open_with_timer = await _settled_count(
                client,
                f"{query} AND ExecutionStatus = 'Running' AND ConveyorState = 'in_progress'",
                entities_n - errors.count,
            )
            worker_open, server_open = rss_mb(None), rss_mb(server_pid)
            began = time.perf_counter()
            await _bounded(entities_n, concurrency, lambda i: move(i, "completed"), line, "completed")
            still = await _wait_closed(client, query, line, "closing")
            completed_s = time.perf_counter() - began
            history_events = len((await client.get_workflow_handle(sample).fetch_history()).events)
    finally:
        await engine.dispose()
    return SideResult(
        side=side,
        entities=entities_n,
        create_s=create_s,
        creates_per_s=entities_n / create_s if create_s else 0.0,
        start_tracking_s=tracking_s,
        completed_s=completed_s,
        transitions_per_s=entities_n / completed_s if completed_s else 0.0,
        worker_rss_mb=worker_open,
        worker_rss_before_mb=worker_before,
        server_rss_mb=server_open,
        server_rss_before_mb=server_before,
        open_with_timer=open_with_timer,
        errors=errors.count,
        still_running=still,
        sample_history_events=history_events,
        error_samples=errors.samples,
    )


async def measure(
    client: Client,
    *,
    entities_n: int,
    concurrency: int,
    store_dir: Path,
    sides: Sequence[str] = (CONVEYOR, BASELINE),
    progress: bool = True,
) -> B4Result:
    """Both sides on one server (the smoke test's way); ``main`` gives each side a fresh server instead."""
    began = time.perf_counter()
    results = {
        side: await measure_side(
            client,
            side,
            entities_n=entities_n,
            concurrency=concurrency,
            store_url=f"sqlite+aiosqlite:///{store_dir}/{side}.db",
            progress=progress,
        )
        for side in sides
    }
    return B4Result(entities_n, concurrency, "shared", results, time.perf_counter() - began)


async def run_fresh(args: argparse.Namespace) -> B4Result:
    """Each side on its own fresh dev server, so server memory is that side's alone."""
    began = time.perf_counter()
    results: dict[str, SideResult] = {}
    sides = [CONVEYOR] if args.no_baseline else [CONVEYOR, BASELINE]
    for side in sides:
        with tempfile.TemporaryDirectory(prefix="b4-") as tmp:
            async with dev_server(file_backed=args.file_backed) as env:
                results[side] = await measure_side(
                    env.client,
                    side,
                    entities_n=args.entities,
                    concurrency=args.concurrency,
                    store_url=f"sqlite+aiosqlite:///{tmp}/store.db",
                    progress=not args.quiet,
                    server_pid=dev_server_pid(),
                )
    mode = "file-backed" if args.file_backed else "in-memory"
    return B4Result(args.entities, args.concurrency, mode, results, time.perf_counter() - began)


BEGIN, END = "<!-- b4:begin (generated by bench/b4_entities.py) -->", "<!-- b4:end -->"


def write_markdown(result: B4Result, meta: dict[str, Any]) -> None:
    """Replace B4's generated block in BENCHMARKS.md (a section of its own is added the first time)."""
    box = meta["machine"]
    lines = [
        f"- date: {meta['date']}",
        machine_line(box),
        f"- command: `{meta['command']}` ({result.mode} dev server, a fresh one per side); "
        f"took {result.duration_s:.0f}s",
        "",
        result.table(),
        "",
    ]
    write_section(BEGIN, END, lines, heading="B4 entities")


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=10_000, help="task entities per side (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight (default 200)")
    parser.add_argument("--file-backed", action="store_true", help="a file-backed (SQLite) dev server")
    parser.add_argument("--no-baseline", action="store_true", help="only the Conveyor side")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = False  # as worker.py: the sandbox re-imports workflow modules per run
    result = await run_fresh(args)
    print(f"\nB4 entities, {result.mode} dev server\n")
    print(result.table())
    if not args.no_write:
        command = " ".join(["python -m bench.b4_entities", *(argv if argv is not None else sys.argv[1:])])
        date = datetime.now(UTC).astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
        meta = {"machine": machine(), "command": command.strip(), "date": date}
        RESULTS.mkdir(parents=True, exist_ok=True)
        RESULT_PATH.write_text(json.dumps({**meta, **asdict(result)}, indent=1) + "\n")
        write_markdown(result, meta)
        print(f"\nraw results: {RESULT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
