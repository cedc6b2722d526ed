"""B5 staged pipeline: documents through CLASSIFICATION → DATA EXTRACTION → PROCESSING on Temporal stage
workers, against the polling design of the product notes, with the same processors.

    python -m bench.b5_pipeline [--documents 500] [--slots 4] [--poll 3,3,5] [--rate 0] [--polling-first]

**Conveyor side**: ``examples/document-pipeline.yaml`` run by ``DefinitionWorkflow`` on a real dev server;
one stage worker per stage queue (``worker.stage_workers``, ``--slots`` items at once each), which long-poll
Temporal and take an item as soon as they have a free slot.

**Polling side** (seeds/000, "Pull-Based Workflow System"): items are rows of a SQLite table with a
``stage`` column; one worker per stage polls the table for its stage, claims up to ``--slots`` of the
oldest ready rows, runs the same processor on them concurrently, moves each to the next stage (and writes
an audit row) in one transaction, and sleeps its poll interval (3 s, 3 s, 5 s as in the notes) whenever a
poll finds fewer rows than it can take. As in the notes, an upload wakes the classification worker at once;
a move to a later stage waits for that stage's next poll. Favouring the polling side, a worker that found a
full batch polls again at once instead of sleeping.

Both sides get the same documents (PDF invoices, text receipts, contracts, PDF resumes; invoice numbers
distinct per side, so PROCESSING's duplicate rule does not fire across them) and record results in the same
store. Documents arrive all at once (``--rate 0``) or at ``--rate`` per second. Per side: items/s (first
upload to last item done), end-to-end latency p50/p95, and per stage the latency (item enters the stage →
item leaves it: queue wait plus work) and the processor's own time, p50/p95. Conveyor's times come from
workflow histories (activity scheduled → completed) and the ``stage_runs`` table; the polling side's from
its audit rows.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from activities.stages import StageItem, StageProcessor, StageResult, load
from bench.b1_interpreter import (
    BENCHMARKS_MD,
    RESULTS,
    CpuMeter,
    Progress,
    cpu_seconds,
    dev_server,
    dev_server_pid,
    machine,
    machine_line,
    percentile,
    write_section,
)
from core.db import create_engine, migrate, session_factory
from core.models import StageRun
from core.payloads import BlobStore
from core.settings import Settings, get_settings
from examples.pipelines.context import dispose_engines
from tests.support.documents import Document, contract_text, invoice_pdf, receipt_text, resume_pdf
from tests.support.processes import READY_TIMEOUT_S, Child, conveyor_env
from tests.support.run import start as start_definition
from worker import conveyor_worker
from workflows.messages import ExecutionSnapshot

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "examples" / "document-pipeline.yaml"
STAGES = ("classification", "extraction", "processing")
DONE = "done"
NEXT = {"classification": "extraction", "extraction": "processing", "processing": DONE}
POLLS = (3.0, 3.0, 5.0)
"""The notes' poll intervals (s): classification 3, data extraction 3, processing 5."""
CONVEYOR, POLLING = "conveyor", "polling"
THRESHOLD = 5000
RUN_TIMEOUT_S = 1800.0
RESULT_PATH = RESULTS / "b5.json"


# -- the documents ----------------------------------------------------------------------------------------


def corpus(count: int, prefix: str) -> list[Document]:
    """``count`` documents, the four classes in turn; invoice numbers carry ``prefix``."""
    makers = [
        lambda i: invoice_pdf(f"{prefix}-{i:05d}", total=float(100 + (i * 373) % 9000)),
        lambda i: receipt_text(),
        lambda i: contract_text(),
        lambda i: resume_pdf(),
    ]
    return [makers[i % 4](i) for i in range(count)]


def stage_input(stage: str, document: Document, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the definition gives each stage (``with.input``), from what earlier stages returned."""
    if stage == "classification":
        return {"filename": document.filename, "content_type": document.content_type}
    if stage == "extraction":
        return {"document_class": done["classification"]["document_class"]}
    return {
        "document_class": done["extraction"]["document_class"],
        "fields": done["extraction"]["fields"],
        "filename": document.filename,
        "threshold": THRESHOLD,
    }


# -- results ----------------------------------------------------------------------------------------------


@dataclass
class Spread:
    p50: float
    p95: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(percentile(values, 50), percentile(values, 95), sum(values) / len(values))


@dataclass
class SideResult:
    side: str
    documents: int
    completed: int
    classes_correct: int
    wall_s: float
    items_per_s: float
    end_to_end_s: Spread
    stage_latency_s: dict[str, Spread]
    stage_work_s: dict[str, Spread]
    worker_cpu_s: float
    server_cpu_s: float | None
    polls: int = 0
    """Polling side: queries the stage workers made (empty or not)."""
    outside_stages_s: Spread | None = None
    """Per item, end-to-end time not spent in a stage: for Conveyor the workflow's start and the
    interpreter's workflow tasks between stages; for the polling design nothing (a move is one UPDATE)."""


@dataclass
class B5Result:
    documents: int
    slots: int
    polls_s: list[float]
    rate: float
    order: list[str]
    sides: dict[str, SideResult]
    ratios: dict[str, float]
    duration_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        return render_table(self)


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b not in (None, 0) and b == b else float("nan")  # noqa: PLR0124


# -- Conveyor side ----------------------------------------------------------------------------------------


async def _arrive(count: int, rate: float) -> None:
    """Pace uploads: the ``count``-th document arrives at ``count / rate`` seconds."""
    if rate > 0:
        await asyncio.sleep(count / rate)


@asynccontextmanager
async def stage_process(client: Client, settings: Settings, slots: int, folder: Path) -> AsyncIterator[Child]:
    """``python worker.py --stages classification,extraction,processing``, as an operator starts it, until
    its three stage queues have a poller."""
    env = conveyor_env(
        temporal_address=client.service_client.config.target_host,
        temporal_namespace=client.namespace,
        database_url=settings.database_url,
        blob_dir=str(settings.blob_dir),
        log_level="INFO",
    )
    argv = [
        sys.executable,
        str(ROOT / "worker.py"),
        "--stages",
        ",".join(STAGES),
        "--max-concurrent",
        str(slots),
    ]
    child = Child("stage worker", argv, env, folder / "stage-worker.log")
    await child.start()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while child.output().count("serving stage queue") < len(STAGES):
                if not child.running:
                    raise RuntimeError(f"the stage worker exited:\n{child.output()}")
                await asyncio.sleep(0.2)
        yield child
    finally:
        await child.stop()


async def run_conveyor(
    client: Client,
    settings: Settings,
    store: AsyncEngine,
    documents: list[Document],
    slots: int,
    rate: float,
    line: Progress,
    server_pid: int | None,
    *,
    folder: Path,
    warmup: list[Document],
) -> SideResult:
    definition = yaml.safe_load(DEFINITION.read_text())
    blobs = BlobStore(settings.blob_dir)

    async def upload(index: int, document: Document) -> WorkflowHandle[Any, ExecutionSnapshot]:
        await _arrive(index, rate)
        # The Pipelines API stores the file and starts the execution with this input.
        key = blobs.put(document.data)
        meta = {
            "blob": key,
            "filename": document.filename,
            "content_type": document.content_type,
            "size": len(document.data),
        }
        return await start_definition(client, settings.task_queue, definition, {"file": meta})

    meter = CpuMeter(server_pid)
    async with conveyor_worker(client, settings), stage_process(client, settings, slots, folder) as stages:
        if warmup:
            await asyncio.gather(*[(await upload(0, d)).result() for d in warmup])
        stage_pid = stages.process.pid if stages.process is not None else None
        stage_cpu0 = cpu_seconds(stage_pid)
        async with meter.measure():
            began = time.perf_counter()
            handles = await asyncio.gather(*(upload(i, d) for i, d in enumerate(documents)))
            finished = 0

            async def wait(handle: WorkflowHandle[Any, ExecutionSnapshot]) -> ExecutionSnapshot:
                nonlocal finished
                result = await handle.result()
                finished += 1
                line.show(f"{CONVEYOR}: {finished}/{len(documents)} done, {time.perf_counter() - began:.0f}s")
                return result

            results = await asyncio.wait_for(asyncio.gather(*(wait(h) for h in handles)), RUN_TIMEOUT_S)
            wall = time.perf_counter() - began
        stage_cpu = cpu_seconds(stage_pid) - stage_cpu0
    completed = sum(1 for r in results if r.state == "COMPLETED")
    correct = sum(
        1
        for r, d in zip(results, documents, strict=True)
        if r.state == "COMPLETED" and (r.output or {}).get("document_class") == d.document_class
    )
    latency, end_to_end, outside = await _histories(client, [h.id for h in handles])
    work = await _stage_runs(store, {h.id for h in handles})
    return SideResult(
        side=CONVEYOR,
        documents=len(documents),
        completed=completed,
        classes_correct=correct,
        wall_s=wall,
        items_per_s=len(documents) / wall,
        end_to_end_s=Spread.of(end_to_end),
        outside_stages_s=Spread.of(outside),
        stage_latency_s={stage: Spread.of(latency[stage]) for stage in STAGES},
        stage_work_s={stage: Spread.of(work[stage]) for stage in STAGES},
        worker_cpu_s=meter.worker_s + stage_cpu,
        server_cpu_s=meter.server_s if server_pid is not None else None,
    )


async def _histories(
    client: Client, workflow_ids: list[str]
) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Per stage, activity scheduled → completed (s); per item, workflow started → closed (s) and the part
    of that outside the stages."""
    latency: dict[str, list[float]] = {stage: [] for stage in STAGES}
    end_to_end: list[float] = []
    outside: list[float] = []
    gate = asyncio.Semaphore(20)

    async def one(workflow_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        scheduled: dict[int, tuple[str, float]] = {}
        in_stages = 0.0
        for event in history.events:
            at = event.event_time.ToMicroseconds() / 1e6
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                queue = event.activity_task_scheduled_event_attributes.task_queue.name
                scheduled[event.event_id] = (queue.removeprefix("stage."), at)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                stage, began = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
                if stage in latency:
                    latency[stage].append(at - began)
                    in_stages += at - began
        events = history.events
        total = (events[-1].event_time.ToMicroseconds() - events[0].event_time.ToMicroseconds()) / 1e6
        end_to_end.append(total)
        outside.append(total - in_stages)

    await asyncio.gather(*(one(w) for w in workflow_ids))
    return latency, end_to_end, outside


async def _stage_runs(store: AsyncEngine, workflow_ids: set[str]) -> dict[str, list[float]]:
    """The processors' own time per stage, from the rows the stage workers wrote."""
    work: dict[str, list[float]] = {stage: [] for stage in STAGES}
    async with session_factory(store)() as session:
        rows = (await session.exec(select(StageRun).where(col(StageRun.outcome) == "completed"))).all()
    for row in rows:
        if row.execution_id in workflow_ids and row.stage in work:
            work[row.stage].append(row.duration_ms / 1000)
    return work


# -- polling side -----------------------------------------------------------------------------------------

POLLING_SCHEMA = (
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY, stage TEXT NOT NULL, status TEXT NOT NULL, blob TEXT NOT NULL,
        filename TEXT, content_type TEXT, data TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, entered_at REAL NOT NULL, done_at REAL)""",
    "CREATE INDEX ix_items_stage ON items (stage, status, id)",
    """CREATE TABLE workflow_events (
        id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL, stage TEXT NOT NULL, outcome TEXT NOT NULL,
        entered_at REAL NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL, error TEXT)""",
)


class PollingPipeline:
    """The notes' design: a table of items by stage, one polling worker per stage."""

    def __init__(
        self,
        engine: AsyncEngine,
        blobs: BlobStore,
        processors: dict[str, StageProcessor],
        slots: int,
        polls: Sequence[float],
        documents: list[Document],
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.processors = processors
        self.slots = slots
        self.polls = dict(zip(STAGES, polls, strict=True))
        self.documents: dict[int, Document] = {}
        self.expected = len(documents)
        self.done = 0
        self.all_done = asyncio.Event()
        self.uploaded = asyncio.Event()
        self.poll_count = 0

    async def create(self) -> None:
        async with self.engine.begin() as connection:
            for statement in POLLING_SCHEMA:
                await connection.execute(sql(statement))

    async def upload(self, document: Document) -> None:
        """The upload endpoint: store the file, add the row, wake the classification worker."""
        key = self.blobs.put(document.data)
        now = time.time()
        async with self.engine.begin() as connection:
            found = await connection.execute(
                sql(
                    "INSERT INTO items (stage, status, blob, filename, content_type, created_at, entered_at) "
                    "VALUES ('classification', 'ready', :blob, :filename, :type, :now, :now) RETURNING id"
                ),
                {"blob": key, "filename": document.filename, "type": document.content_type, "now": now},
            )
            self.documents[int(found.scalar_one())] = document
        self.uploaded.set()

    async def worker(self, stage: str, stop: asyncio.Event) -> None:
        interval = self.polls[stage]
        while not stop.is_set():
            if stage == "classification":
                self.uploaded.clear()
            claimed = await self._claim(stage)
            self.poll_count += 1
            if claimed:
                await asyncio.gather(*(self._run(stage, row) for row in claimed))
            if len(claimed) < self.slots:
                waits = [asyncio.create_task(stop.wait())]
                if stage == "classification":
                    waits.append(asyncio.create_task(self.uploaded.wait()))
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()

    async def _claim(self, stage: str) -> list[dict[str, Any]]:
        async with self.engine.begin() as connection:
            found = await connection.execute(
                sql(
                    "UPDATE items SET status = 'claimed' WHERE id IN "
                    "(SELECT id FROM items WHERE stage = :stage AND status = 'ready' ORDER BY id LIMIT :n) "
                    "RETURNING id, blob, data, entered_at"
                ),
                {"stage": stage, "n": self.slots},
            )
            return [dict(row) for row in found.mappings().all()]

    async def _run(self, stage: str, row: dict[str, Any]) -> None:
        document = self.documents[row["id"]]
        done: dict[str, dict[str, Any]] = json.loads(row["data"])
        item = StageItem(
            pipeline="b5-polling",
            stage=stage,
            execution_id=f"b5-polling/{row['id']}",
            data=stage_input(stage, document, done),
            blob=row["blob"],
            _blobs=self.blobs,
        )
        started = time.time()
        error: str | None = None
        try:
            result = self.processors[stage].process(item)
            output = await result if inspect.isawaitable(result) else result
            if not isinstance(output, StageResult):
                raise TypeError(f"stage {stage} returned {type(output).__name__}")
        except Exception as exc:  # the notes' design: a failed item stays at its stage
            error = f"{type(exc).__name__}: {exc}"
        finished = time.time()
        async with self.engine.begin() as connection:
            if error is None:
                done[stage] = output.data
                after = NEXT[stage]
                await connection.execute(
                    sql(
                        "UPDATE items SET stage = :after, status = 'ready', data = :data, entered_at = :now, "
                        "done_at = CASE WHEN :after = 'done' THEN :now END WHERE id = :id"
                    ),
                    {"after": after, "data": json.dumps(done), "now": finished, "id": row["id"]},
                )
            else:
                await connection.execute(
                    sql("UPDATE items SET status = 'ready', attempts = attempts + 1 WHERE id = :id"),
                    {"id": row["id"]},
                )
            await connection.execute(
                sql(
                    "INSERT INTO workflow_events (item_id, stage, outcome, entered_at, started_at, "
                    "finished_at, error) "
                    "VALUES (:id, :stage, :outcome, :entered, :started, :finished, :error)"
                ),
                {
                    "id": row["id"],
                    "stage": stage,
                    "outcome": "failed" if error else "completed",
                    "entered": row["entered_at"],
                    "started": started,
                    "finished": finished,
                    "error": error,
                },
            )
        if error is None and NEXT[stage] == DONE:
            self.done += 1
            if self.done >= self.expected:
                self.all_done.set()


async def run_polling(
    settings: Settings,
    documents: list[Document],
    slots: int,
    polls: Sequence[float],
    rate: float,
    directory: Path,
    line: Progress,
    server_pid: int | None,
    *,
    warmup: list[Document],
) -> SideResult:
    engine = create_engine(f"sqlite+aiosqlite:///{directory}/polling.db")
    registered = load(settings.stage_modules)
    blobs = BlobStore(settings.blob_dir)
    for index, document in enumerate(warmup):  # imports, the store's engine: what the first items would pay
        done: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            item = StageItem(
                "b5-warmup",
                stage,
                f"b5-warmup/{index}",
                stage_input(stage, document, done),
                blob=blobs.put(document.data),
                _blobs=blobs,
            )
            result = registered[stage].process(item)
            output = await result if inspect.isawaitable(result) else result
            assert isinstance(output, StageResult)
            done[stage] = output.data
    pipeline = PollingPipeline(
        engine, BlobStore(settings.blob_dir), {s: registered[s] for s in STAGES}, slots, polls, documents
    )
    meter = CpuMeter(server_pid)
    try:
        await pipeline.create()
        stop = asyncio.Event()
        async with meter.measure():
            workers = [asyncio.create_task(pipeline.worker(stage, stop)) for stage in STAGES]
            began = time.perf_counter()
            for index, document in enumerate(documents):
                await _arrive_at(began, index, rate)
                await pipeline.upload(document)
            while not pipeline.all_done.is_set():
                line.show(
                    f"{POLLING}: {pipeline.done}/{len(documents)} done, {time.perf_counter() - began:.0f}s"
                )
                try:
                    await asyncio.wait_for(pipeline.all_done.wait(), 1.0)
                except TimeoutError:
                    if time.perf_counter() - began > RUN_TIMEOUT_S:
                        raise RuntimeError("the polling side did not finish") from None
            wall = time.perf_counter() - began
            stop.set()
            await asyncio.gather(*workers)
        async with engine.connect() as connection:
            events = (
                (
                    await connection.execute(
                        sql(
                            "SELECT item_id, stage, entered_at, started_at, finished_at FROM workflow_events "
                            "WHERE outcome = 'completed'"
                        )
                    )
                )
                .mappings()
                .all()
            )
            items = (
                (await connection.execute(sql("SELECT id, data, created_at, done_at FROM items")))
                .mappings()
                .all()
            )
    finally:
        await engine.dispose()
    latency: dict[str, list[float]] = {stage: [] for stage in STAGES}
    work: dict[str, list[float]] = {stage: [] for stage in STAGES}
    in_stages: dict[int, float] = {}
    for event in events:
        latency[event["stage"]].append(event["finished_at"] - event["entered_at"])
        work[event["stage"]].append(event["finished_at"] - event["started_at"])
        in_stages[event["item_id"]] = in_stages.get(event["item_id"], 0.0) + (
            event["finished_at"] - event["entered_at"]
        )
    finished = [row for row in items if row["done_at"] is not None]
    correct = sum(
        1
        for row in items
        if json.loads(row["data"]).get("classification", {}).get("document_class")
        == pipeline.documents[row["id"]].document_class
        and row["done_at"] is not None
    )
    return SideResult(
        side=POLLING,
        documents=len(documents),
        completed=sum(1 for row in items if row["done_at"] is not None),
        classes_correct=correct,
        wall_s=wall,
        items_per_s=len(documents) / wall,
        end_to_end_s=Spread.of([row["done_at"] - row["created_at"] for row in finished]),
        outside_stages_s=Spread.of(
            [row["done_at"] - row["created_at"] - in_stages.get(row["id"], 0.0) for row in finished]
        ),
        stage_latency_s={stage: Spread.of(latency[stage]) for stage in STAGES},
        stage_work_s={stage: Spread.of(work[stage]) for stage in STAGES},
        worker_cpu_s=meter.worker_s,
        server_cpu_s=meter.server_s if server_pid is not None else None,
        polls=pipeline.poll_count,
    )


async def _arrive_at(began: float, index: int, rate: float) -> None:
    if rate > 0:
        await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))


# -- both sides -------------------------------------------------------------------------------------------


async def measure(
    client: Client,
    *,
    documents: int = 500,
    slots: int = 4,
    polls: Sequence[float] = POLLS,
    rate: float = 0.0,
    polling_first: bool = False,
    warmup: int = 20,
    progress: bool = True,
) -> B5Result:
    """Run both sides on ``client``'s server with a fresh store, blob folder and queues; restores the
    process's settings afterwards."""
    began = time.perf_counter()
    line = Progress(progress, "b5")
    saved = {key: os.environ.get(key) for key in ("CONVEYOR_DATABASE_URL", "CONVEYOR_BLOB_DIR")}
    with tempfile.TemporaryDirectory(prefix="b5-") as tmp:
        directory = Path(tmp)
        store_url = f"sqlite+aiosqlite:///{directory}/store.db"
        # The processors read the store from the process's settings, as a stage worker started with
        # CONVEYOR_DATABASE_URL does.
        os.environ["CONVEYOR_DATABASE_URL"] = store_url
        os.environ["CONVEYOR_BLOB_DIR"] = str(directory / "blobs")
        get_settings.cache_clear()
        store = create_engine(store_url)
        try:
            await migrate(store)
            settings = Settings(task_queue=f"b5-{uuid.uuid4().hex[:8]}")
            server_pid = dev_server_pid()
            order = [POLLING, CONVEYOR] if polling_first else [CONVEYOR, POLLING]
            sides: dict[str, SideResult] = {}
            for side in order:
                if side == CONVEYOR:
                    sides[side] = await run_conveyor(
                        client,
                        settings,
                        store,
                        corpus(documents, "C"),
                        slots,
                        rate,
                        line,
                        server_pid,
                        folder=directory,
                        warmup=corpus(warmup, "CW"),
                    )
                else:
                    sides[side] = await run_polling(
                        settings,
                        corpus(documents, "P"),
                        slots,
                        polls,
                        rate,
                        directory,
                        line,
                        server_pid,
                        warmup=corpus(warmup, "PW"),
                    )
        finally:
            await dispose_engines()
            await store.dispose()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            get_settings.cache_clear()
    conveyor, polling = sides[CONVEYOR], sides[POLLING]
    ratios = {
        "items_per_s": _ratio(conveyor.items_per_s, polling.items_per_s),
        "end_to_end_p50": _ratio(conveyor.end_to_end_s.p50, polling.end_to_end_s.p50),
        "end_to_end_p95": _ratio(conveyor.end_to_end_s.p95, polling.end_to_end_s.p95),
        **{
            f"{stage}_latency_p50": _ratio(
                conveyor.stage_latency_s[stage].p50, polling.stage_latency_s[stage].p50
            )
            for stage in STAGES
        },
    }
    result = B5Result(
        documents=documents,
        slots=slots,
        polls_s=list(polls),
        rate=rate,
        order=order,
        sides=sides,
        ratios=ratios,
        duration_s=time.perf_counter() - began,
    )
    line.done(f"done in {result.duration_s:.0f}s")
    return result


# -- presentation -----------------------------------------------------------------------------------------

LABELS = {"classification": "CLASSIFICATION", "extraction": "DATA EXTRACTION", "processing": "PROCESSING"}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"  # noqa: PLR0124


def render_table(result: B5Result) -> str:
    c, p = result.sides[CONVEYOR], result.sides[POLLING]
    lines = [
        "| metric | Conveyor (Temporal stage workers) | polling design | ratio C / P |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, a: float | None, b: float | None, digits: int = 2, ratio: bool = True) -> None:
        shown = _fmt(_ratio(a, b)) if ratio else ""
        lines.append(f"| {label} | {_fmt(a, digits)} | {_fmt(b, digits)} | {shown} |")

    lines.append(
        f"| documents done / classified right | {c.completed} / {c.classes_correct} "
        f"| {p.completed} / {p.classes_correct} | |"
    )
    row("items/s", c.items_per_s, p.items_per_s, 1)
    row("wall time (s)", c.wall_s, p.wall_s, 1)
    row("end-to-end latency p50 (s)", c.end_to_end_s.p50, p.end_to_end_s.p50)
    row("end-to-end latency p95 (s)", c.end_to_end_s.p95, p.end_to_end_s.p95)
    if c.outside_stages_s is not None and p.outside_stages_s is not None:
        row("time outside stages p50 (s)", c.outside_stages_s.p50, p.outside_stages_s.p50, ratio=False)
        row("time outside stages p95 (s)", c.outside_stages_s.p95, p.outside_stages_s.p95, ratio=False)
    for stage in STAGES:
        row(f"{LABELS[stage]} latency p50 (s)", c.stage_latency_s[stage].p50, p.stage_latency_s[stage].p50)
        row(f"{LABELS[stage]} latency p95 (s)", c.stage_latency_s[stage].p95, p.stage_latency_s[stage].p95)
    for stage in STAGES:
        row(
            f"{LABELS[stage]} processor time p50 (ms)",
            c.stage_work_s[stage].p50 * 1000,
            p.stage_work_s[stage].p50 * 1000,
            1,
        )
    row("worker CPU, interpreter + stage processes (s)", c.worker_cpu_s, p.worker_cpu_s, 1)
    row("dev-server CPU (s)", c.server_cpu_s, p.server_cpu_s, 1, ratio=False)
    lines.append(f"| database polls | 0 (long-poll) | {p.polls} | |")
    return "\n".join(lines)


def write_json(result: B5Result, meta: dict[str, Any]) -> Path:
    """Store this run in bench/results/b5.json under its arrival pattern, keeping the others."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = json.loads(RESULT_PATH.read_text()) if RESULT_PATH.exists() else {}
    runs = data.get("runs", {})
    key = "burst" if result.rate <= 0 else f"rate-{result.rate:g}"
    runs[key] = {**meta, **asdict(result)}
    RESULT_PATH.write_text(json.dumps({"runs": runs}, indent=1, allow_nan=True) + "\n")
    return RESULT_PATH


def _from_json(data: dict[str, Any]) -> B5Result:
    def side(values: dict[str, Any]) -> SideResult:
        spread = {
            k: {s: Spread(**v) for s, v in values[k].items()} for k in ("stage_latency_s", "stage_work_s")
        }
        outside = values.get("outside_stages_s")
        return SideResult(
            **{
                **values,
                "end_to_end_s": Spread(**values["end_to_end_s"]),
                "outside_stages_s": Spread(**outside) if outside else None,
                **spread,
            }
        )

    keys = ("documents", "slots", "polls_s", "rate", "order", "ratios", "duration_s")
    return B5Result(**{k: data[k] for k in keys}, sides={n: side(s) for n, s in data["sides"].items()})


BEGIN, END = "<!-- b5:begin -->", "<!-- b5:end -->"
NOTES = "<!-- b5:notes (hand-written, kept when the tables are regenerated) -->"


def write_markdown() -> None:
    """Regenerate B5's tables in BENCHMARKS.md from bench/results/b5.json, keeping the hand-written notes."""
    parts = [
        "Generated by `bench/b5_pipeline.py` from `bench/results/b5.json`; the notes at the end are "
        "written by hand.",
        "",
    ]
    runs = json.loads(RESULT_PATH.read_text())["runs"] if RESULT_PATH.exists() else {}
    for key, data in runs.items():
        result = _from_json(data)
        box = data["machine"]
        arrival = "all at once" if result.rate <= 0 else f"{result.rate:g} per second"
        parts += [
            f"### {key}: {result.documents} documents arriving {arrival}",
            "",
            f"- date: {data['date']}",
            machine_line(box),
            f"- command: `{data['command']}`",
            f"- {result.slots} items at once per stage on both sides; polling intervals "
            f"{', '.join(f'{p:g}' for p in result.polls_s)} s; sides ran {' then '.join(result.order)}; "
            f"took {result.duration_s:.0f}s",
            "",
            render_table(result),
            "",
        ]
    write_section(BEGIN, END, parts, heading="B5 staged pipeline", notes=NOTES)


# -- entry point ------------------------------------------------------------------------------------------


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=500, help="documents per side (default 500)")
    parser.add_argument(
        "--slots", type=int, default=4, help="items at once per stage, both sides (default 4)"
    )
    parser.add_argument(
        "--poll",
        type=lambda text: [float(part) for part in text.split(",")],
        default=list(POLLS),
        help="polling side's intervals per stage in seconds (default 3,3,5)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="documents per second (default 0: all at once)"
    )
    parser.add_argument("--polling-first", action="store_true", help="run the polling side first")
    parser.add_argument("--warmup", type=int, default=20, help="documents per side before measuring")
    parser.add_argument("--file-backed", action="store_true", help="the file-backed (SQLite) dev server")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args(argv)
    if len(args.poll) != len(STAGES):
        parser.error(f"--poll needs {len(STAGES)} intervals, one per stage")
    sys.dont_write_bytecode = False  # as worker.py: the sandbox reloads workflow modules per run
    async with dev_server(file_backed=args.file_backed) as env:
        result = await measure(
            env.client,
            documents=args.documents,
            slots=args.slots,
            polls=args.poll,
            rate=args.rate,
            polling_first=args.polling_first,
            warmup=args.warmup,
            progress=not args.quiet,
        )
    print(f"\nB5 staged pipeline, {args.documents} documents\n")
    print(result.table())
    if not args.no_write:
        command = " ".join(["python -m bench.b5_pipeline", *(argv if argv is not None else sys.argv[1:])])
        date = datetime.now(UTC).astimezone().strftime("%a %d %b %Y %H:%M:%S %Z")
        path = write_json(result, {"machine": machine(), "command": command.strip(), "date": date})
        write_markdown()
        print(f"\nraw results: {path.relative_to(ROOT)}; tables: {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
