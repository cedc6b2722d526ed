"""A real HTTP server on loopback that ``http_request`` and webhook steps call in tests.

It stands in for external suppliers and partner APIs (the only thing the suite stubs): it echoes requests,
answers any status, fails a set number of times before succeeding, sends Retry-After, and is slow on demand.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

CATALOG_KEY = "catalogue-key-123"
"""The credential the /catalog routes want: a bearer token for pages, an X-Api-Key for the cursor."""
CATALOG = [{"sku": f"SKU-{i}", "price": i * 1.5} for i in range(1, 8)]
"""Seven products the /catalog routes page through."""


class Target:
    """The server's app plus what it has seen, for assertions."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.requests: list[dict[str, Any]] = []
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.url = ""
        self.gates: dict[str, bool] = {}
        self.token = "s3cr3t-token"
        """The value the test settings give ``secrets.TARGET_TOKEN``."""
        app = self.app

        async def seen_of(request: Request) -> dict[str, Any]:
            body = await request.body()
            seen = {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": body.decode() if body else None,
            }
            self.requests.append(seen)
            return seen

        @app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def echo(request: Request) -> JSONResponse:
            return JSONResponse(await seen_of(request))

        @app.api_route("/echo/items", methods=["GET", "POST"])
        async def echo_items(request: Request) -> JSONResponse:
            """What /echo answers, as the one item of the list under ``items`` (a page for ``data_fetch``)."""
            return JSONResponse({"items": [await seen_of(request)]})

        @app.api_route("/status/{code}", methods=["GET", "POST"])
        async def status(code: int) -> Response:
            self.counts[f"status/{code}"] += 1
            return JSONResponse({"status": code}, status_code=code)

        @app.get("/flaky/{key}/{failures}")
        async def flaky(key: str, failures: int) -> Response:
            """Answers 503 ``failures`` times for ``key``, then 200."""
            self.counts[key] += 1
            if self.counts[key] <= failures:
                return JSONResponse({"attempt": self.counts[key]}, status_code=503)
            return JSONResponse({"attempt": self.counts[key], "ok": True})

        @app.get("/rate-limited/{key}/{retry_after}")
        async def rate_limited(key: str, retry_after: int) -> Response:
            """Answers 429 with Retry-After once for ``key``, then 200."""
            self.counts[key] += 1
            if self.counts[key] == 1:
                return JSONResponse({}, status_code=429, headers={"Retry-After": str(retry_after)})
            return JSONResponse({"attempt": self.counts[key]})

        @app.get("/slow")
        async def slow(seconds: float = 1.0) -> JSONResponse:
            await asyncio.sleep(seconds)
            return JSONResponse({"slept": seconds})

        @app.get("/big")
        async def big(size: int) -> Response:
            return Response(b"x" * size, media_type="text/plain")

        @app.get("/gate/{name}")
        async def gate(name: str) -> JSONResponse:
            """422 while gate ``name`` is closed (the default), 200 once a test opened it."""
            self.counts[f"gate/{name}"] += 1
            if self.gates.get(name):
                return JSONResponse({"gate": name, "open": True})
            return JSONResponse({"gate": name, "open": False}, status_code=422)

        @app.get("/redirect")
        async def redirect(to: str, request: Request) -> Response:
            """302 to ``to``: the first hop of a redirect chain the outbound guard must re-check."""
            self.requests.append({"path": "/redirect", "host": request.headers.get("host"), "to": to})
            return Response(status_code=302, headers={"Location": to})

        @app.get("/drip")
        async def drip(seconds: float = 30.0) -> StreamingResponse:
            """A body trickled a byte at a time for ``seconds``: only an overall deadline stops it."""

            async def trickle() -> AsyncIterator[bytes]:
                for _ in range(int(seconds * 10)):
                    yield b"x"
                    await asyncio.sleep(0.1)

            return StreamingResponse(trickle(), media_type="text/plain")

        @app.get("/health")
        async def health() -> JSONResponse:
            return JSONResponse({"status": "ok"})

        @app.get("/text")
        async def text() -> Response:
            return Response("plain words", media_type="text/plain")

        @app.get("/private")
        async def private(request: Request) -> Response:
            """Answers 200 only to ``Authorization: Bearer <TARGET_TOKEN>``, without echoing the token."""
            seen = request.headers.get("authorization")
            self.requests.append({"path": "/private", "authorization": seen})
            if seen != f"Bearer {self.token}":
                return JSONResponse({"authorized": False}, status_code=401)
            return JSONResponse({"authorized": True})

        @app.post("/hook/{name}")
        async def hook(name: str, request: Request) -> JSONResponse:
            self.requests.append({"path": f"/hook/{name}", "json": await request.json()})
            return JSONResponse({"ok": True})

        @app.get("/catalog/pages")
        async def catalog_pages(request: Request, page: int = 1, per_page: int = 3) -> JSONResponse:
            """``CATALOG`` by page number under ``data.items``, empty past the end; wants the bearer key."""
            self.requests.append(
                {
                    "path": "/catalog/pages",
                    "query": dict(request.query_params),
                    "authorization": request.headers.get("authorization"),
                }
            )
            if request.headers.get("authorization") != f"Bearer {CATALOG_KEY}":
                return JSONResponse({"authorized": False}, status_code=401)
            start = (page - 1) * per_page
            return JSONResponse({"data": {"items": CATALOG[start : start + per_page], "page": page}})

        @app.get("/catalog/cursor")
        async def catalog_cursor(request: Request, cursor: str | None = None, limit: int = 3) -> JSONResponse:
            """``CATALOG`` in slices of ``limit``; ``meta.next`` is the next cursor, null at the end."""
            self.requests.append(
                {
                    "path": "/catalog/cursor",
                    "query": dict(request.query_params),
                    "api_key": request.headers.get("x-api-key"),
                }
            )
            if request.headers.get("x-api-key") != CATALOG_KEY:
                return JSONResponse({"authorized": False}, status_code=401)
            start = int(cursor.removeprefix("c")) if cursor else 0
            end = start + limit
            following = f"c{end}" if end < len(CATALOG) else None
            return JSONResponse({"results": CATALOG[start:end], "meta": {"next": following}})


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: Any, port: int | None = None, **options: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on loopback for the block; yields its base URL. ``options`` go to
    ``uvicorn.Config`` (``ssl_certfile`` and ``ssl_keyfile`` make it https)."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
