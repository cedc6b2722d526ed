"""Stage processors: the Python a pipeline's ``stage`` steps run, each on its own task queue.

A processor is a function (or a class with a ``process`` method) taking one ``StageItem`` and returning one
``StageResult``::

    from activities.stages import StageItem, StageResult, stage

    @stage("classification")
    async def classify(item: StageItem) -> StageResult:
        text = item.read_blob().decode()
        return StageResult({"class": "invoice" if "invoice" in text.lower() else "other"})

Workers started with ``python worker.py --stages classification`` poll only ``stage.classification``: they
long-poll Temporal and take an item when they have a free slot (``--max-concurrent``), so capacity is the
backpressure and the task queue's backlog is the stage's queue length. A processor that runs long should call
``item.heartbeat(progress)``; the worker also heartbeats on its own while the processor runs, so a worker that
dies (even by SIGKILL) is noticed after the step's ``heartbeat_timeout`` and its item goes to another worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.models import StageRun
from core.payloads import BlobStore
from core.settings import Settings
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import STAGE_NAME, StageConfig, parse_config, stage_queue


@dataclass
class StageItem:
    """One pipeline item as a stage processor sees it."""

    pipeline: str
    """The pipeline (definition) name."""
    stage: str
    execution_id: str
    data: dict[str, Any]
    """The step's ``input``: the item's metadata and what earlier stages produced."""
    blob: str | None = None
    """Key of the item's uploaded file in the blob store, when it has one."""
    attempt: int = 1
    settings: Settings | None = field(default=None, repr=False, compare=False)
    """The worker's settings (the store, AI provider, outbound allow-list) for processors that need them."""
    _blobs: BlobStore | None = field(default=None, repr=False, compare=False)
    _progress: list[Any] = field(default_factory=list, repr=False, compare=False)

    def read_blob(self) -> bytes:
        """The uploaded file's bytes."""
        if self.blob is None or self._blobs is None:
            raise ValueError(f"item {self.execution_id} has no file")
        return self._blobs.get(self.blob)

    def heartbeat(self, *details: Any) -> None:
        """Report progress; the details reach the next attempt's ``activity.info().heartbeat_details``."""
        self._progress[:] = details


@dataclass
class StageResult:
    """What a processor returns: the stage step's output."""

    data: dict[str, Any]


Processor = Callable[[StageItem], Awaitable[StageResult] | StageResult]
P = TypeVar("P")


@dataclass(frozen=True)
class StageProcessor:
    """A registered processor and the task queue its workers poll."""

    name: str
    process: Processor
    task_queue: str


_REGISTRY: dict[str, StageProcessor] = {}

RECORD_TIMEOUT_S = 10.0


def register(name: str, processor: Processor | type, *, task_queue: str | None = None) -> StageProcessor:
    """Register ``processor`` for stage ``name``; a class is instantiated once and its ``process`` used."""
    if not re.fullmatch(STAGE_NAME, name):
        raise ValueError(f"stage name {name!r} must match {STAGE_NAME}")
    process = processor().process if isinstance(processor, type) else processor
    entry = StageProcessor(name, process, task_queue or stage_queue(name))
    _REGISTRY[name] = entry
    return entry


def stage(name: str, *, task_queue: str | None = None) -> Callable[[P], P]:
    """Decorator form of ``register``."""

    def decorate(processor: P) -> P:
        register(name, processor, task_queue=task_queue)  # type: ignore[arg-type]
        return processor

    return decorate


def load(modules: Iterable[str]) -> dict[str, StageProcessor]:
    """Import the modules that register processors (``CONVEYOR_STAGE_MODULES``); every registered one."""
    for module in modules:
        importlib.import_module(module)
    return dict(_REGISTRY)


class StageActivities:
    """The ``stage`` activity for one processor: a worker serving several stages has one of these each."""

    def __init__(
        self,
        processor: StageProcessor,
        blobs: BlobStore,
        sessions: async_sessionmaker[AsyncSession] | None,
        settings: Settings | None = None,
        *,
        threads: Executor | None = None,
    ) -> None:
        self._processor = processor
        self._blobs = blobs
        self._sessions = sessions
        self._settings = settings
        self._threads = threads

    @activity.defn(name="stage")
    async def stage(self, request: StepRequest) -> StepOutcome:
        """Run the processor on one item, heartbeating while it works; record the run for the metrics."""
        try:
            config = parse_config(StageConfig, request.config)
        except ValueError as exc:
            raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
        info = activity.info()
        if config.stage != self._processor.name:
            raise ApplicationError(
                f"this worker runs stage {self._processor.name!r}, not {config.stage!r}",
                type=errors.CONFIG_INVALID,
                non_retryable=True,
            )
        data = config.input if isinstance(config.input, dict) else {"value": config.input}
        item = StageItem(
            pipeline=request.definition or "",
            stage=config.stage,
            execution_id=request.execution_id,
            data=data,
            blob=config.blob,
            attempt=info.attempt,
            settings=self._settings,
            _blobs=self._blobs,
        )
        started = datetime.now(UTC)
        beating = asyncio.create_task(_heartbeat(item, info.heartbeat_timeout))
        try:
            # Heartbeats go on until the attempt is recorded: a slow store must not look like a dead worker.
            return await self._run(config.stage, item, started, request)
        finally:
            beating.cancel()

    async def _run(self, stage: str, item: StageItem, started: datetime, request: StepRequest) -> StepOutcome:
        try:
            process = self._processor.process
            if _is_async(process):
                result = await process(item)  # type: ignore[misc]
            else:
                # A blocking processor runs in this stage's own threads (as many as its slots), so the
                # heartbeats go on while it works and one stage's threads never starve another's.
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, process, item)
                result = await loop.run_in_executor(self._threads, call)
        except Exception as exc:  # retried by the step's retry policy unless it is non-retryable
            await self._record(request, item, started, "failed", f"{type(exc).__name__}: {exc}")
            raise
        if not isinstance(result, StageResult):
            await self._record(request, item, started, "failed", "processor did not return a StageResult")
            raise ApplicationError(
                f"stage {stage}: the processor returned {type(result).__name__}, not StageResult",
                type=errors.CONFIG_INVALID,
                non_retryable=True,
            )
        await self._record(request, item, started, "completed")
        return StepOutcome(output=result.data, attempt=item.attempt)

    async def _record(
        self, request: StepRequest, item: StageItem, started: datetime, outcome: str, error: str | None = None
    ) -> None:
        """One row for the metrics. Best effort: an item is never failed or held back because its record
        could not be written (the store down or slow), which would run its processor again."""
        if self._sessions is None:
            return
        finished = datetime.now(UTC)
        run = StageRun(
            pipeline=item.pipeline,
            stage=item.stage,
            execution_id=request.execution_id,
            step_id=request.step_id,
            attempt=item.attempt,
            worker=activity.client().identity[:255],
            started_at=started,
            finished_at=finished,
            duration_ms=(finished - started).total_seconds() * 1000,
            outcome=outcome,
            error=error[:2000] if error else None,
        )
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S), self._sessions() as session:
                session.add(run)
                await session.commit()
        except Exception as exc:
            activity.logger.warning("stage run not recorded (%s): %s", outcome, exc)


def _is_async(process: Processor) -> bool:
    # A function, a bound ``process`` method, or an instance of a class with ``async def __call__``.
    return inspect.iscoroutinefunction(process) or inspect.iscoroutinefunction(type(process).__call__)


async def _heartbeat(item: StageItem, limit: timedelta | None) -> None:
    """Heartbeat at a third of the heartbeat timeout while the processor runs, with its latest progress."""
    every = limit.total_seconds() / 3 if limit else 10.0
    while True:
        activity.heartbeat(*item._progress)
        await asyncio.sleep(max(every, 0.2))
