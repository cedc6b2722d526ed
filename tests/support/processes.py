"""Conveyor's real processes as subprocesses, for tests that kill and restart them.

The reliability suite needs what the in-process fixtures cannot give: a worker that can be killed with
SIGKILL mid-activity, a Temporal dev server restarted on its SQLite file, and an API restarted on its store.
Each helper starts the same command an operator would run (``python worker.py``, ``uvicorn api.app:app``,
``temporal server start-dev``) with settings passed as ``CONVEYOR_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from core.names import search_attribute_flags
from core.problems import dynamic_config_flags
from tests.support.target import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60.0
"""Generous: two cores shared with other test runs."""


def conveyor_env(**settings: str) -> dict[str, str]:
    """The environment of a child process: this one's, plus ``CONVEYOR_<NAME>`` for each setting given."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.update({f"CONVEYOR_{name.upper()}": value for name, value in settings.items()})
    return env


class Child:
    """One subprocess; its output goes to a log file so a failing test can show it."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                # Its own group, so a kill reaches anything it spawned (custom_code runners) too.
                process_group=0,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a while."""
        await self._signal(signal.SIGTERM, grace=15.0)

    async def _signal(self, sig: signal.Signals, grace: float | None = None) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    def output(self) -> str:
        """The last of what the process printed, for assertion messages."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def worker(env: Mapping[str, str], log: Path) -> Child:
    """``python worker.py`` with ``env``."""
    return Child("worker", [sys.executable, str(ROOT / "worker.py")], env, log)


def api(env: Mapping[str, str], port: int, log: Path) -> Child:
    """``uvicorn api.app:app`` on loopback ``port`` with ``env``."""
    argv = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port)]
    return Child("api", [*argv, "--app-dir", str(ROOT), "--log-level", "warning"], env, log)


def temporal(db_file: Path, port: int, ui_port: int, log: Path) -> Child:
    """A file-backed ``temporal server start-dev`` with Conveyor's search attributes, as ``make run`` has."""
    argv = [
        str(BIN / "temporal"),
        *["server", "start-dev", "--db-filename", str(db_file), "--headless"],
        *["--port", str(port), "--ui-port", str(ui_port), "--log-level", "error"],
        *search_attribute_flags(),
        *dynamic_config_flags(),
    ]
    return Child("temporal", argv, os.environ, log)


async def wait_for_temporal(address: str, child: Child) -> None:
    """Until the frontend answers a health check (fails fast if the server died)."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            assert child.running, f"temporal exited:\n{child.output()}"
            try:
                client = await Client.connect(address)
                if await client.service_client.check_health():
                    return
            except (RuntimeError, RPCError):
                pass
            await asyncio.sleep(0.2)


async def wait_for_api(url: str, child: Child, path: str = "/health", *others: Child) -> None:
    """Until ``path`` answers 200 (fails fast if the API or one of ``others`` died)."""
    async with asyncio.timeout(READY_TIMEOUT_S), httpx.AsyncClient(timeout=2.0) as http:
        while True:
            for watched in (child, *others):
                assert watched.running, f"{watched.name} exited:\n{watched.output()}"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}{path}")).status_code == 200:
                    return
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def api_stack(folder: Path, **settings: str) -> AsyncIterator[str]:
    """An API and a worker as subprocesses with ``settings``; yields the API's URL once it is ready.

    Ready means ``/ready`` answers 200: the store and Temporal answer and the worker polls its queue.
    """
    port = free_port()
    env = conveyor_env(**settings)
    api_child = api(env, port, folder / "api.log")
    worker_child = worker(env, folder / "worker.log")
    await worker_child.start()
    await api_child.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_for_api(url, api_child, "/ready", worker_child)
        yield url
    finally:
        await api_child.stop()
        await worker_child.stop()


def pids_with_argument(marker: str) -> list[int]:
    """Processes on this machine with an argument that starts with ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(argument.startswith(marker.encode()) for argument in arguments):
            found.append(int(entry.name))
    return found
