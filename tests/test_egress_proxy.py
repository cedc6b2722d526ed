"""The egress proxy of ``custom_code`` sandboxes against hostile requests, on a real Unix socket, with the
real outbound guard and a real HTTP server on loopback behind it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from activities import egress
from activities.egress import MAX_CONNECTIONS, MAX_HEAD_BYTES, REFUSALS_KEPT, EgressProxy
from core.ssrf import OutboundGuard, OutboundPolicy
from tests.support.target import Target, free_port

LOOPBACK_ALLOWED = OutboundGuard(OutboundPolicy.from_entries(["127.0.0.0/8"]))


@pytest.fixture
def authority(target: Target) -> str:
    return urlsplit(target.url).netloc


@pytest.fixture
async def proxy(tmp_path: Path, authority: str) -> AsyncIterator[tuple[EgressProxy, Path]]:
    """A proxy that allows the target, with the suite's loopback allowance."""
    made = EgressProxy([authority], LOOPBACK_ALLOWED)
    socket = tmp_path / "egress.sock"
    async with made.serving(socket):
        yield made, socket


async def exchange(socket: Path, request: bytes) -> bytes:
    """Everything the proxy answers to ``request`` until it closes the connection."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_head", "reason"),
    [
        (b"hello\r\n\r\n", "not an HTTP proxy request"),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "CONNECT names host:port"),
        (b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", "is not a host or host:port"),
        (b"GET https://example.com/ HTTP/1.1\r\n\r\n", "https goes through CONNECT"),
        (b"GET /relative HTTP/1.1\r\n\r\n", "absolute http:// URL"),
        (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", "example.com:443 is not in the step's allow_hosts"),
    ],
)
async def test_a_bad_or_unlisted_request_is_answered_with_the_reason(
    proxy: tuple[EgressProxy, Path], request_head: bytes, reason: str
) -> None:
    made, socket = proxy
    answer = await exchange(socket, request_head)
    status_line = answer.split(b"\r\n", 1)[0].decode()
    assert status_line.split(" ")[1] in ("400", "403"), status_line
    assert reason in status_line
    assert reason in made.refusals[-1]


async def test_a_head_over_the_limit_is_dropped(proxy: tuple[EgressProxy, Path], authority: str) -> None:
    _, socket = proxy
    padding = b"X-Pad: " + b"x" * MAX_HEAD_BYTES + b"\r\n"
    answer = await exchange(socket, f"GET http://{authority}/echo HTTP/1.1\r\n".encode() + padding + b"\r\n")
    assert answer == b""


async def test_plain_http_is_sent_on_without_proxy_headers(
    proxy: tuple[EgressProxy, Path], authority: str
) -> None:
    _, socket = proxy
    request = (
        f"GET http://{authority}/echo?via=proxy HTTP/1.1\r\nHost: {authority}\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: close\r\n\r\n"
    )
    answer = await exchange(socket, request.encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    seen = json.loads(body)
    assert seen["path"] == "/echo" and seen["query"] == {"via": "proxy"}
    assert not [name for name in seen["headers"] if name.startswith("proxy-")]


async def test_an_allowed_name_that_resolves_to_loopback_is_refused_by_the_guard(
    tmp_path: Path, target: Target
) -> None:
    """The guard checks the address a name resolves to, not the name."""
    port = urlsplit(target.url).port
    strict = EgressProxy([f"localhost:{port}"], OutboundGuard(OutboundPolicy.from_entries([])))
    socket = tmp_path / "egress.sock"
    async with strict.serving(socket):
        answer = await exchange(socket, f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"loopback" in answer.split(b"\r\n", 1)[0]


async def test_an_allowed_host_that_does_not_answer_is_a_502(tmp_path: Path) -> None:
    port = free_port()
    made = EgressProxy([f"127.0.0.1:{port}"], LOOPBACK_ALLOWED)
    socket = tmp_path / "egress.sock"
    async with made.serving(socket):
        answer = await exchange(socket, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 cannot connect to 127.0.0.1:")


async def test_connections_beyond_the_limit_are_turned_away(proxy: tuple[EgressProxy, Path]) -> None:
    """Turned away as accepted, unread: a request already sent on such a connection may make the close a
    reset rather than the 503 (the reason is in the step's log either way)."""
    made, socket = proxy
    idle = [await asyncio.open_unix_connection(str(socket)) for _ in range(MAX_CONNECTIONS)]
    try:
        await asyncio.sleep(0.2)  # let the proxy accept them all before the one too many
        answer: bytes | None = None
        with contextlib.suppress(ConnectionResetError):
            answer = await exchange(socket, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        assert answer is None or answer.startswith(b"HTTP/1.1 503 "), answer
        assert made.refusals == [f"more than {MAX_CONNECTIONS} connections at once"]
    finally:
        for _, writer in idle:
            writer.close()


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_idle_connections_beyond_the_limit_are_turned_away_as_they_come(
    proxy: tuple[EgressProxy, Path],
) -> None:
    """A connection that sends nothing counts too: the ones beyond the limit are answered 503 without
    waiting for a head, so hostile code holds no more than the limit of the worker's files."""
    made, socket = proxy
    before = open_files()
    idle = [await asyncio.open_unix_connection(str(socket)) for _ in range(MAX_CONNECTIONS)]
    extra = [await asyncio.open_unix_connection(str(socket)) for _ in range(200)]
    try:
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*(reader.read() for reader, _ in extra))
        assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {
            f"HTTP/1.1 503 more than {MAX_CONNECTIONS} connections at once".encode()
        }
        held_by_the_proxy = open_files() - before - len(idle) - len(extra)
        assert held_by_the_proxy <= MAX_CONNECTIONS + 4, held_by_the_proxy
        assert made.refusals[REFUSALS_KEPT:] == [f"… and {len(extra) - REFUSALS_KEPT} more"]
    finally:
        for _, writer in idle + extra:
            writer.close()


async def test_a_connection_that_sends_no_head_gives_its_place_back(
    proxy: tuple[EgressProxy, Path], authority: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, socket = proxy
    monkeypatch.setattr(egress, "HEAD_TIMEOUT_S", 0.5)
    idle = [await asyncio.open_unix_connection(str(socket)) for _ in range(MAX_CONNECTIONS)]
    try:
        async with asyncio.timeout(30):
            assert [await reader.read() for reader, _ in idle] == [b""] * MAX_CONNECTIONS
        request = f"GET http://{authority}/echo HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        assert (await exchange(socket, request.encode())).startswith(b"HTTP/1.1 200")
    finally:
        for _, writer in idle:
            writer.close()


async def test_closing_the_proxy_ends_its_tunnels(tmp_path: Path, authority: str, target: Target) -> None:
    """A run's tunnels end with the run, even one the code left open."""
    made = EgressProxy([authority], LOOPBACK_ALLOWED)
    socket = tmp_path / "egress.sock"
    async with made.serving(socket):
        reader, writer = await asyncio.open_unix_connection(str(socket))
        writer.write(f"CONNECT {authority} HTTP/1.1\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    async with asyncio.timeout(30):
        await reader.read()  # the end, not a hang
    writer.close()
