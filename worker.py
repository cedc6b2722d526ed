"""Starts a Conveyor worker: the interpreter and its activities on the main task queue, stage queues, or both.

python worker.py                                     # the main task queue
python worker.py --stages classification,extraction --max-concurrent 4   # only those stages' queues
python worker.py --main --stages all                 # both: what `make run` starts

The worker reads the store (CONVEYOR_DATABASE_URL) for the connectors of ``database_query`` and
``data_fetch`` steps, so it must run where that database is reachable, with the keys their configurations
are sealed with (CONVEYOR_SECRET_KEYS__<ID>; the main worker does not start without one); stage workers
write one row per stage attempt there (the pipeline metrics), and entity activities their SLA records.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities import HttpActivities, NotificationActivities
from activities._masking import SecretMasker, SecretMaskingInterceptor, masked_logs
from activities.ai import AiActivities
from activities.code import CodeActivities
from activities.database import DatabaseActivities
from activities.emit import EmitActivities
from activities.entities import EntityActivities, EntityStepActivities
from activities.fetch import FetchActivities
from activities.lanes import LaneActivities
from activities.stages import StageActivities, StageProcessor, load
from core.db import create_engine, session_factory
from core.logging import configure_logging
from core.payloads import BlobStore
from core.sealing import secret_sealer
from core.settings import Settings, get_settings
from core.ssrf import outbound_client
from core.telemetry import setup_tracing, worker_interceptors, worker_runtime
from core.temporal import connect
from workflows.entity import EntityWorkflow
from workflows.interpreter import DefinitionWorkflow
from workflows.lanes import LaneWorkflow
from workflows.sandbox import workflow_runner


@asynccontextmanager
async def conveyor_worker(
    client: Client, settings: Settings, *, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A running worker for the interpreter, the admission lanes and every step activity; stops when the
    block exits. Raises ``KeyConfigInvalid`` at once without a usable key for secrets at rest."""
    sealer = secret_sealer(settings)
    store = create_engine(settings.database_url)
    database = DatabaseActivities(session_factory(store), settings, sealer)
    lanes = LaneActivities(client)
    # Every step's and notification's HTTP goes through the outbound address guard (core/ssrf.py).
    async with outbound_client(settings) as http:
        entities = EntityActivities(session_factory(store), client, http, settings)
        worker = Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=[DefinitionWorkflow, LaneWorkflow, EntityWorkflow],
            workflow_runner=workflow_runner(),
            graceful_shutdown_timeout=timedelta(seconds=10),
            interceptors=[
                *worker_interceptors(client.config()["interceptors"]),
                SecretMaskingInterceptor(
                    SecretMasker(s.get_secret_value() for s in settings.secrets.values())
                ),
            ],
            activities=[
                HttpActivities(http, settings).http_request,
                NotificationActivities(http, settings).notification,
                database.database_query,
                FetchActivities(http, database, settings).data_fetch,
                CodeActivities(settings).custom_code,
                AiActivities(http, settings).ai_process,
                EmitActivities(session_factory(store), client, settings, automations=entities).emit,
                lanes.lane_acquire,
                lanes.lane_check,
                entities.entity_sla_record,
                entities.entity_event,
                EntityStepActivities(session_factory(store), client).entity,
            ],
        )
        try:
            # Secrets reach log lines through libraries too (httpx logs URLs): mask them in every record.
            with masked_logs(SecretMasker(s.get_secret_value() for s in settings.secrets.values())):
                async with worker:
                    yield worker
        finally:
            await database.close()
            await store.dispose()


DEFAULT_STAGE_SLOTS = 4


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def choose_stages(registered: dict[str, StageProcessor], names: list[str]) -> list[StageProcessor]:
    """The processors ``--stages`` names (``all``: every registered one); unknown names, none at all, or
    two processors on one task queue (each would fail the other's items) are errors."""
    if names == ["all"]:
        chosen = list(registered.values())
        if not chosen:
            raise ValueError("no stage processors are registered (see CONVEYOR_STAGE_MODULES)")
    else:
        unknown = [name for name in names if name not in registered]
        if unknown:
            known = ", ".join(sorted(registered)) or "none (see CONVEYOR_STAGE_MODULES)"
            raise ValueError(f"no processor for stage {', '.join(unknown)}; registered: {known}")
        chosen = [registered[name] for name in dict.fromkeys(names)]
    queues: dict[str, str] = {}
    for processor in chosen:
        other = queues.setdefault(processor.task_queue, processor.name)
        if other != processor.name:
            raise ValueError(
                f"stages {other} and {processor.name} both use task queue {processor.task_queue}"
            )
    return chosen


@asynccontextmanager
async def stage_workers(
    client: Client, settings: Settings, processors: list[StageProcessor], *, max_concurrent: int
) -> AsyncIterator[list[Worker]]:
    """One worker per stage queue, each taking at most ``max_concurrent`` items at a time: a worker with no
    free slot does not poll, so a busy stage's items wait in its queue (the backlog the metrics show)."""
    store = create_engine(settings.database_url)
    blobs = BlobStore(settings.blob_dir)
    masker = SecretMasker(s.get_secret_value() for s in settings.secrets.values())
    pools = [ThreadPoolExecutor(max_concurrent, f"stage-{p.name}") for p in processors]
    workers = [
        Worker(
            client,
            task_queue=processor.task_queue,
            activities=[
                StageActivities(processor, blobs, session_factory(store), settings, threads=pool).stage
            ],
            max_concurrent_activities=max_concurrent,
            graceful_shutdown_timeout=timedelta(seconds=10),
            interceptors=[
                *worker_interceptors(client.config()["interceptors"]),
                SecretMaskingInterceptor(masker),
            ],
        )
        for processor, pool in zip(processors, pools, strict=True)
    ]
    try:
        async with AsyncExitStack() as running:
            for each in workers:
                await running.enter_async_context(each)
            yield workers
    finally:
        for pool in pools:
            pool.shutdown(wait=False)
        await store.dispose()


async def main() -> None:
    # The sandbox loads the interpreter's module afresh for every workflow run; compiled bytecode makes that
    # a load instead of a compile, even where PYTHONDONTWRITEBYTECODE is set for the rest of the machine.
    sys.dont_write_bytecode = False
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task-queue", help="task queue to serve (default: CONVEYOR_TASK_QUEUE)")
    parser.add_argument(
        "--stages",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[],
        help="serve only these stages' task queues (comma-separated, or 'all' for every registered one)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=_positive,
        default=DEFAULT_STAGE_SLOTS,
        help=f"items each stage works on at once in this process (default {DEFAULT_STAGE_SLOTS})",
    )
    parser.add_argument(
        "--main", action="store_true", help="with --stages: serve the main task queue as well"
    )
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings)
    setup_tracing(settings, service="conveyor-worker")
    client = await connect(settings, runtime=worker_runtime(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log = logging.getLogger("conveyor.worker")
    try:
        chosen = choose_stages(load(settings.stage_modules), args.stages)
    except ValueError as exc:
        parser.error(str(exc))
    async with AsyncExitStack() as running:
        if not chosen or args.main:
            worker = await running.enter_async_context(
                conveyor_worker(client, settings, task_queue=args.task_queue)
            )
            log.info("serving task queue %s", worker.task_queue)
        if chosen:
            workers = await running.enter_async_context(
                stage_workers(client, settings, chosen, max_concurrent=args.max_concurrent)
            )
            for each in workers:
                log.info("serving stage queue %s (%d at once)", each.task_queue, args.max_concurrent)
        await stop.wait()
        # Leaving the block shuts the workers down: no new tasks, running activities get the grace period.
        log.info("stopping: finishing running activities")


if __name__ == "__main__":
    asyncio.run(main())
