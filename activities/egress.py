"""The one way out of a ``custom_code`` sandbox: an HTTP proxy on a Unix socket, served by the worker.

A step that names ``allow_hosts`` gets this socket inside its sandbox; the runner there forwards
``127.0.0.1:<port>`` to it and sets ``HTTP_PROXY``/``HTTPS_PROXY``, which urllib (and most HTTP clients)
honour. Each request names its destination: ``CONNECT host:port`` (HTTPS, or any protocol in a tunnel) or
``GET http://host:port/path`` (plain HTTP, sent on with the path alone). The proxy connects only when the
host and port are in the step's ``allow_hosts`` *and* the outbound guard (``core/ssrf.py``) passes the
address, and then to the address the guard checked; anything else is answered ``403`` with the reason,
which the code sees in its exception. A connection stays with the destination it was admitted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
from temporalio.exceptions import ApplicationError

from core.ssrf import OutboundGuard
from workflows.steps import host_and_port

MAX_CONNECTIONS: Final = 32
"""Open connections per run; more are answered 503 as they are accepted, before anything is read from them,
so hostile code cannot exhaust the worker's files (the sandbox's own limit of open files bounds how fast
it can try)."""
MAX_HEAD_BYTES: Final = 16 * 1024
HEAD_TIMEOUT_S: Final = 10.0
"""How long a connection may take to send its request head; one that sends none gives its place back."""
REFUSALS_KEPT: Final = 20
"""Refusal reasons kept for the step's log; the rest are counted, so a flood of refusals stays one line."""
CONNECT_TIMEOUT_S: Final = 10.0
_DEFAULT_PORTS: Final = (80, 443)
_CHUNK: Final = 64 * 1024
_REASON_CHARS: Final = 300


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class _Destination:
    host: str
    port: int
    forwarded: bytes | None
    """The request head to send on (plain HTTP); None for a ``CONNECT`` tunnel."""

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class EgressProxy:
    """The proxy of one ``custom_code`` run: its step's ``allow_hosts``, then the outbound guard."""

    def __init__(self, allow_hosts: Iterable[str], guard: OutboundGuard) -> None:
        self._allowed = {host_and_port(entry) for entry in allow_hosts}
        self._guard = guard
        self._connections: set[asyncio.Task[None]] = set()
        self._refusals: list[str] = []
        self._refusals_unkept = 0

    @property
    def refusals(self) -> list[str]:
        """Why requests were refused, in order, for the step's log: the first :data:`REFUSALS_KEPT`, then
        how many more."""
        more = [f"… and {self._refusals_unkept} more"] if self._refusals_unkept else []
        return [*self._refusals, *more]

    @asynccontextmanager
    async def serving(self, path: Path) -> AsyncIterator[None]:
        """Serve on a Unix socket at ``path`` for the block; every connection ends with it."""
        server = await asyncio.start_unix_server(self._accept, path=str(path), limit=MAX_HEAD_BYTES)
        # The sandbox's user is not the worker's; the folder holding the socket keeps everyone else out.
        os.chmod(path, 0o666)
        try:
            yield
        finally:
            server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            # Before reading a head: a connection that sends none would hold a file until its deadline.
            self._refuse(writer, _Refused(503, f"more than {MAX_CONNECTIONS} connections at once"))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # The proxy closing, which cancels the connections it owns; asyncio's stream callback would
            # report a cancelled connection task as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            return
        try:
            destination = _destination(head)
            address = await self._admit(destination)
            upstream_reader, upstream_writer = await _connect(address, destination)
        except _Refused as refused:
            self._refuse(writer, refused)
            return
        try:
            if destination.forwarded is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream_writer.write(destination.forwarded)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    def _refuse(self, writer: asyncio.StreamWriter, refused: _Refused) -> None:
        """Answer ``refused`` on ``writer`` (closing the connection flushes it) and note why."""
        if len(self._refusals) < REFUSALS_KEPT:
            self._refusals.append(refused.reason)
        else:
            self._refusals_unkept += 1
        phrase = "".join(c if " " <= c <= "~" else "?" for c in refused.reason)[:_REASON_CHARS]
        body = f"{phrase}\n".encode()
        head = f"HTTP/1.1 {refused.status} {phrase}\r\nContent-Type: text/plain\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)

    async def _admit(self, destination: _Destination) -> str:
        """The address to connect to for ``destination``; raises :class:`_Refused` if it is not allowed."""
        host, port = destination.host, destination.port
        by_default = (host, None) in self._allowed and port in _DEFAULT_PORTS
        if (host, port) not in self._allowed and not by_default:
            raise _Refused(403, f"{destination.authority} is not in the step's allow_hosts")
        try:
            target = await self._guard.check(f"http://{destination.authority}/")
        except ApplicationError as exc:  # OutboundBlocked, with the address class in its message
            raise _Refused(403, exc.message) from None
        except httpx.ConnectError as exc:
            raise _Refused(502, str(exc)) from None
        return str(target.address)


async def _connect(
    address: str, destination: _Destination
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            return await asyncio.open_connection(address, destination.port)
    except (OSError, TimeoutError) as exc:
        raise _Refused(502, f"cannot connect to {destination.authority}: {exc or 'timed out'}") from None


def _destination(head: bytes) -> _Destination:
    """Where a proxy request goes, from its head (request line and headers)."""
    request_line, *headers = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = request_line.split(" ")
    except ValueError:
        raise _Refused(400, "not an HTTP proxy request") from None
    if method == "CONNECT":
        host, port = _host_port(target)
        if port is None:
            raise _Refused(400, "CONNECT names host:port")
        return _Destination(host, port, None)
    parts = urlsplit(target)
    if parts.scheme != "http":
        raise _Refused(400, "a proxy request names an absolute http:// URL (https goes through CONNECT)")
    host, port = _host_port(parts.netloc)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [line for line in headers if line and not line.lower().startswith("proxy-")]
    forwarded = "\r\n".join([f"{method} {path} {version}", *kept, "", ""]).encode("latin-1")
    return _Destination(host, port or 80, forwarded)


def _host_port(authority: str) -> tuple[str, int | None]:
    try:
        return host_and_port(authority)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the end, then pass the end on (a half-close), so each side finishes its own way."""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
