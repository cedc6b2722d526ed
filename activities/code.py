"""``custom_code``: the user's Python in a sandbox (``activities/sandbox.py``); JSON in, JSON out.

The code is hostile until proven otherwise, so it runs in bubblewrap as an unprivileged user in PID, network,
mount, IPC and UTS namespaces of its own: no view of the worker's files, environment or processes, no
network but the egress proxy for the hosts its step allows (``activities/egress.py``), and every process it
starts dies with the sandbox. Where no sandbox can be started the step is refused, unless an admin set
``CONVEYOR_CUSTOM_CODE_UNSANDBOXED=allow``; the code then runs as before the sandbox existed: ``python -I -S``
in a temporary directory, in its own session, as the worker's user.

Either way the interpreter is ``python -I -S`` (no environment variables, no user or site packages, no
current directory on ``sys.path``) with limits: wall-clock time (the worker kills the sandbox, or the group),
CPU seconds, address space, file size, open files and process count (``setrlimit`` in the child before the
user's code is read), and the bytes it may print or return (the worker stops reading and kills).

Protocol: stdin carries the code and its input as one JSON document; the child's stdout and stderr
(``print``, warnings) are the log channel, returned as ``StepOutcome.logs``; the result travels on a
separate pipe as one JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._secrets import with_secrets
from activities.egress import EgressProxy
from activities.sandbox import EGRESS_SOCKET, Sandbox, SandboxUnavailable, find_sandbox, returned_signal
from core.settings import Settings
from core.ssrf import OutboundGuard, OutboundPolicy
from workflows import errors
from workflows.messages import StepOutcome, StepRequest
from workflows.steps import CustomCodeConfig, parse_config

HEARTBEAT_S = 1.0
LOG_LINES = 50
LOG_LINE_CHARS = 500
FILE_SIZE_LIMIT = 16 * 1024 * 1024
"""Largest file the code may write in its temporary directory."""
OPEN_FILES_LIMIT = 64
"""Files and sockets the code may hold open at once (the forwarder's included): each connection to the
egress proxy holds one of the worker's files too, and the proxy's own limit turns away only what it can
accept first."""
_CHUNK = 64 * 1024
_REAP_S = 5.0
_TRACEBACK_CHARS = 8_000

# Runs in the child. Everything it needs is imported before the limits are set and the user's code runs, so
# reporting a MemoryError needs no import; the reserve is dropped to make room for the report. Limits are set
# here rather than in a preexec_fn because running Python between fork and exec is unsafe in a threaded
# process, and the worker is one. The egress forwarder is a thread started before the process limit (which
# forbids new threads too): it carries 127.0.0.1:<port> to the proxy's Unix socket, so ordinary clients
# reach it through HTTP_PROXY; the code can break it, but only to its own loss, as the proxy decides.
_RUNNER = r"""
import json, linecache, os, resource, sys, traceback
memory, cpu, fsize, files = map(int, sys.argv[1:5])
egress = sys.argv[5]
os.environ.clear()

def forward(path):
    import asyncio, socket, threading

    async def pipe(reader, writer):
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass

    async def carry(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        writer.close()
        upstream_writer.close()

    async def serve(listener):
        server = await asyncio.start_server(carry, sock=listener)
        await server.serve_forever()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    threading.stack_size(256 * 1024)
    threading.Thread(target=asyncio.run, args=(serve(listener),), daemon=True).start()
    return "http://127.0.0.1:%d" % listener.getsockname()[1]

if egress:
    proxy = forward(egress)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ[name] = proxy
for limit, value in (
    (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, files),
    (resource.RLIMIT_CORE, 0),
):
    resource.setrlimit(limit, (value, value))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
except (ValueError, OSError):
    pass
report = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
reserve = bytearray(1 << 20)

def send(doc):
    report.write(json.dumps(doc, allow_nan=False).encode())
    report.flush()

def leave(status):
    # Without finalisation: a daemon thread (the forwarder) woken during it would abort the process.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status)

def user_traceback(exc):
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    return "".join(traceback.format_exception(type(exc), exc, tb))

try:
    request = json.load(sys.stdin.buffer)
    source, data = request["code"], request["input"]
    request = None
    linecache.cache["<custom_code>"] = (len(source), None, source.splitlines(True), "<custom_code>")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "input": data}
    exec(compile(source, "<custom_code>", "exec", dont_inherit=True), namespace)
    main = namespace.get("main")
    result = main(data) if callable(main) else namespace.get("result")
except MemoryError as exc:
    reserve = None
    namespace = data = None
    send({"ok": False, "kind": "memory", "message": "MemoryError", "traceback": user_traceback(exc)})
    leave(1)
except BaseException as exc:
    reserve = None
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    send({"ok": False, "kind": "error", "message": message, "traceback": user_traceback(exc)})
    leave(1)
sys.stdout.flush()
try:
    encoded = json.dumps({"ok": True, "result": result}, allow_nan=False).encode()
except MemoryError:
    reserve = None
    send({"ok": False, "kind": "memory", "message": "MemoryError while encoding the result"})
    leave(1)
except (TypeError, ValueError) as exc:
    send({"ok": False, "kind": "result", "message": f"the result is not JSON: {exc}"})
    leave(1)
report.write(encoded)
report.flush()
leave(0)
"""


class _OutputTooLarge(Exception):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


@dataclass
class _Finished:
    returncode: int
    report: bytes
    output: bytes


CHILD_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}
"""Read by the C library at start (the runner empties the environment before the user's code runs): the
egress forwarder's thread would otherwise reserve a malloc arena of 64 MB of address space, out of
``memory_mb``."""
UNSANDBOXED_HINT = (
    "install bubblewrap (apt-get install bubblewrap) where the worker may create namespaces, or set "
    "CONVEYOR_CUSTOM_CODE_UNSANDBOXED=allow to run code without a sandbox (it can then read and reach "
    "what the worker can)"
)


class CodeActivities:
    """The ``custom_code`` step: one sandbox per attempt, killed with everything in it on any way out."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._guard = OutboundGuard(OutboundPolicy.from_settings(settings))
        self._sandbox: Sandbox | None = None
        self._unsandboxed = False
        self._finding = asyncio.Lock()

    @activity.defn(name="custom_code")
    async def custom_code(self, request: StepRequest) -> StepOutcome:
        """Run the step's code on its input and return what ``main(input)`` returned (or ``result``)."""
        config = _config(with_secrets(request.config, self._settings.secrets))
        sandbox = await self._find_sandbox()
        timeout = float(config.timeout)
        activity.logger.info(
            "running custom code (%d bytes, timeout %gs, %d MB, %s)",
            len(config.code),
            timeout,
            config.memory_mb,
            "sandboxed" if sandbox else "UNSANDBOXED",
        )
        finished, refusals = await self._run(config, timeout, sandbox)
        for reason in refusals:
            activity.logger.warning("custom code egress refused: %s", reason)
        logs = _log_lines(finished.output)
        logs += [
            {"level": "warning", "message": f"outbound request refused: {reason}"} for reason in refusals
        ]
        report = _report(finished, timeout)
        return StepOutcome(output=report.get("result"), attempt=activity.info().attempt, logs=logs)

    async def _find_sandbox(self) -> Sandbox | None:
        """This worker's sandbox, found once; None where there is none and an admin allows running without.

        A failed search is not remembered when unsandboxed code is refused, so installing bubblewrap (or
        allowing namespaces) takes effect without restarting the worker.
        """
        async with self._finding:
            if self._sandbox is None and not self._unsandboxed:
                try:
                    self._sandbox = await find_sandbox(self._settings.custom_code_bwrap)
                except SandboxUnavailable as exc:
                    if self._settings.custom_code_unsandboxed != "allow":
                        raise ApplicationError(
                            f"custom_code needs a sandbox and this worker has none ({exc}): "
                            + UNSANDBOXED_HINT,
                            type=errors.CODE_SANDBOX_UNAVAILABLE,
                            non_retryable=True,
                        ) from None
                    activity.logger.warning(
                        "custom_code runs WITHOUT a sandbox (CONVEYOR_CUSTOM_CODE_UNSANDBOXED=allow): %s", exc
                    )
                    self._unsandboxed = True
        return self._sandbox

    async def _run(
        self, config: CustomCodeConfig, seconds: float, sandbox: Sandbox | None
    ) -> tuple[_Finished, list[str]]:
        try:
            stdin = json.dumps({"code": config.code, "input": config.input}, allow_nan=False).encode()
        except ValueError as exc:
            raise ApplicationError(
                f"the input is not JSON: {exc}", type=errors.CONFIG_INVALID, non_retryable=True
            ) from None
        limits = [
            str(config.memory_mb * 1024 * 1024),
            str(math.ceil(seconds) + 1),
            str(FILE_SIZE_LIMIT),
            str(OPEN_FILES_LIMIT),
        ]
        proxy = EgressProxy(config.allow_hosts, self._guard)
        with tempfile.TemporaryDirectory(prefix="conveyor-code-", ignore_cleanup_errors=True) as scratch:
            async with contextlib.AsyncExitStack() as stack:
                egress = None
                if config.allow_hosts:
                    egress = os.path.join(scratch, "egress.sock")
                    await stack.enter_async_context(proxy.serving(Path(egress)))
                runner = ["-I", "-S", "-c", _RUNNER, *limits]
                if sandbox is None:
                    command = [sys.executable, *runner, egress or ""]
                else:
                    command = sandbox.command(
                        [*runner, EGRESS_SOCKET if egress else ""], egress=egress, env=CHILD_ENVIRONMENT
                    )
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=scratch,
                    env=CHILD_ENVIRONMENT if sandbox is None else {},
                    start_new_session=True,
                )
                try:
                    finished = await _communicate(process, stdin, seconds, config.max_output_bytes)
                finally:
                    # Also on success: anything the code started goes with it. Killing bwrap kills the
                    # sandbox's init, and with it every process in the sandbox's PID namespace.
                    _kill_group(process)
                    await _reap(process)
        if sandbox is not None and (signal_number := returned_signal(finished.returncode)) is not None:
            finished.returncode = -signal_number
        return finished, proxy.refusals


async def _communicate(
    process: asyncio.subprocess.Process, stdin: bytes, seconds: float, cap: int
) -> _Finished:
    assert process.stdin and process.stdout and process.stderr
    printed: list[bytes] = []
    feeder = asyncio.create_task(_feed(process.stdin, stdin))
    # The report wraps the result in a few bytes of its own.
    report = asyncio.create_task(_read_capped(process.stdout, cap + 64, "result", []))
    output = asyncio.create_task(_read_capped(process.stderr, cap, "output", printed))
    exited = asyncio.create_task(process.wait())
    tasks = {feeder, report, output, exited}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        pending = set(tasks)
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ApplicationError(
                    f"the code ran longer than its {seconds:g}s timeout and was stopped",
                    _details(b"".join(printed)),
                    type=errors.CODE_TIMEOUT,
                    non_retryable=True,
                )
            done, pending = await asyncio.wait(
                pending, timeout=min(remaining, HEARTBEAT_S), return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                task.result()
            activity.heartbeat()
    except _OutputTooLarge as exc:
        what = "returned" if exc.stream == "result" else "printed"
        raise ApplicationError(
            f"the code {what} more than {cap} bytes and was stopped",
            type=errors.CODE_OUTPUT_TOO_LARGE,
            non_retryable=True,
        ) from None
    finally:
        for task in tasks:
            task.cancel()
        # Let the cancelled readers let go of their streams before _reap reads them.
        await asyncio.gather(*tasks, return_exceptions=True)
    return _Finished(returncode=exited.result(), report=report.result(), output=output.result())


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    # Code that never reads its input may exit before taking it all.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
        stream.close()


async def _read_capped(stream: asyncio.StreamReader, cap: int, name: str, chunks: list[bytes]) -> bytes:
    """Everything ``stream`` yields, collected in ``chunks`` as it comes (for partial output on timeout)."""
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > cap:
            raise _OutputTooLarge(name)
        chunks.append(chunk)
    return b"".join(chunks)


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for the killed child. On Python 3.11 ``wait()`` returns only once its pipes are closed, and a
    reader stopped at the output cap may have paused its pipe; reading both to their end (at once, as the
    group is dead) unblocks it. A grandchild that left the group could hold the pipes open: give up then."""
    assert process.stdin and process.stdout and process.stderr
    process.stdin.close()

    async def drain(stream: asyncio.StreamReader) -> None:
        while await stream.read(_CHUNK):
            pass

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_REAP_S):
            await asyncio.gather(drain(process.stdout), drain(process.stderr), process.wait())


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The child (bwrap, or the interpreter) leads its own session, so its pid is the group id; an empty
    # group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _report(finished: _Finished, timeout: float) -> dict[str, Any]:
    """The child's report, or the step error that explains why it has none or why it failed."""
    report: Any = None
    if finished.report:
        try:
            report = json.loads(finished.report)
        except ValueError:
            report = None
    if isinstance(report, dict) and report.get("ok") is True and finished.returncode == 0:
        return report
    details = _details(finished.output)
    if isinstance(report, dict) and report.get("ok") is False:
        message = str(report.get("message", "the code failed"))
        if report.get("traceback"):
            details["traceback"] = str(report["traceback"])[-_TRACEBACK_CHARS:]
        if report.get("kind") == "memory":
            raise ApplicationError(
                "the code ran out of memory (MemoryError) and was stopped",
                details,
                type=errors.CODE_MEMORY_EXCEEDED,
                non_retryable=True,
            )
        raise ApplicationError(message, details, type=errors.CODE_ERROR, non_retryable=True)
    code = finished.returncode
    if code == -signal.SIGXCPU:
        raise ApplicationError(
            f"the code used more than its CPU time limit ({math.ceil(timeout) + 1}s) and was stopped",
            details,
            type=errors.CODE_TIMEOUT,
            non_retryable=True,
        )
    if code == -signal.SIGXFSZ:
        message = f"the code wrote a file larger than {FILE_SIZE_LIMIT} bytes and was stopped"
    elif code < 0:
        message = f"the code was killed by {signal.Signals(-code).name}"
    else:
        message = f"the code exited with status {code} without a result"
    raise ApplicationError(message, details, type=errors.CODE_ERROR, non_retryable=True)


def _details(output: bytes) -> dict[str, Any]:
    lines = [line["message"] for line in _log_lines(output)]
    return {"output": lines[-20:]} if lines else {}


def _log_lines(output: bytes) -> list[dict[str, Any]]:
    """What the code printed, as log lines: at most ``LOG_LINES``, each cut at ``LOG_LINE_CHARS``."""
    lines = output.decode("utf-8", errors="replace").splitlines()
    kept = [
        {"level": "info", "message": line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + "…"}
        for line in lines[:LOG_LINES]
    ]
    if len(lines) > LOG_LINES:
        kept.append({"level": "info", "message": f"… {len(lines) - LOG_LINES} more line(s) not kept"})
    return kept


def _config(values: dict[str, Any]) -> CustomCodeConfig:
    try:
        return parse_config(CustomCodeConfig, values)
    except ValueError as exc:
        raise ApplicationError(str(exc), type=errors.CONFIG_INVALID, non_retryable=True) from None
