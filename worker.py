"""Starts a Conveyor worker: the interpreter workflow and its activities on the main task queue.

python worker.py                      # serve the main task queue

The worker reads the store (CONVEYOR_DATABASE_URL) for the connectors of ``database_query`` and
``data_fetch`` steps, so it must run where that database is reachable; it never writes to it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities import HttpActivities, NotificationActivities
from activities._masking import SecretMasker, SecretMaskingInterceptor
from activities.ai import AiActivities
from activities.code import CodeActivities
from activities.database import DatabaseActivities
from activities.emit import EmitActivities
from activities.fetch import FetchActivities
from activities.lanes import LaneActivities
from core.db import create_engine, session_factory
from core.settings import Settings, get_settings
from core.temporal import connect
from workflows.interpreter import DefinitionWorkflow
from workflows.lanes import LaneWorkflow
from workflows.sandbox import workflow_runner


@asynccontextmanager
async def conveyor_worker(
    client: Client, settings: Settings, *, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A running worker for the interpreter, the admission lanes and every step activity; stops when the
    block exits."""
    store = create_engine(settings.database_url)
    database = DatabaseActivities(session_factory(store), settings)
    lanes = LaneActivities(client)
    async with httpx.AsyncClient(follow_redirects=True) as http:
        worker = Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=[DefinitionWorkflow, LaneWorkflow],
            workflow_runner=workflow_runner(),
            graceful_shutdown_timeout=timedelta(seconds=10),
            interceptors=[
                SecretMaskingInterceptor(
                    SecretMasker(s.get_secret_value() for s in settings.secrets.values())
                )
            ],
            activities=[
                HttpActivities(http, settings).http_request,
                NotificationActivities(http, settings).notification,
                database.database_query,
                FetchActivities(http, database, settings).data_fetch,
                CodeActivities(settings).custom_code,
                AiActivities(http, settings).ai_process,
                EmitActivities(session_factory(store), client, settings).emit,
                lanes.lane_acquire,
                lanes.lane_check,
            ],
        )
        try:
            async with worker:
                yield worker
        finally:
            await database.close()
            await store.dispose()


async def main() -> None:
    # The sandbox loads the interpreter's module afresh for every workflow run; compiled bytecode makes that
    # a load instead of a compile, even where PYTHONDONTWRITEBYTECODE is set for the rest of the machine.
    sys.dont_write_bytecode = False
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task-queue", help="task queue to serve (default: CONVEYOR_TASK_QUEUE)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log = logging.getLogger("conveyor.worker")
    async with conveyor_worker(client, settings, task_queue=args.task_queue) as worker:
        log.info("serving task queue %s", worker.task_queue)
        await stop.wait()
        # Leaving the block shuts the worker down: no new tasks, running activities get the grace period.
        log.info("stopping: finishing running activities")


if __name__ == "__main__":
    asyncio.run(main())
