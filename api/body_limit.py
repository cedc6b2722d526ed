"""Request body limits for every endpoint, counted on the bytes that arrive, not on what Content-Length says.

A chunked upload has no Content-Length, and a client may send one that lies; either way the app reads the
body through ``receive``, so the count happens there. Past the limit the read stops, whatever the endpoint
was doing with the body is dropped, and the client gets 413 with the API's JSON error body.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.settings import Settings

_MULTIPART_SLACK = 64 * 1024
"""Room for a multipart upload's boundaries and headers around a file of the largest allowed size."""


def body_limit(settings: Settings, path: str) -> int:
    """The largest body ``path`` accepts: webhooks and pipeline uploads have their own settings."""
    if path.startswith("/hooks/"):
        return settings.webhook_max_body_bytes
    if path.startswith("/api/v1/pipelines/") and path.endswith("/items"):
        return settings.max_upload_bytes + _MULTIPART_SLACK
    return settings.max_request_bytes


_DRAIN_BYTES = 16 * 1024 * 1024
"""How much of a refused body is read and dropped so the client gets its 413; past this it gets a reset."""


class _TooLarge(Exception):
    """Raised into the app from ``receive``, to stop it reading."""


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over ``limit(path)`` bytes."""

    def __init__(self, app: ASGIApp, limit: Callable[[str], int]) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(limit, scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False
        complete = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, complete
            message = await receive()
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a body it could not finish reading is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _refuse(limit, scope, receive, send, drain=not complete)


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send, *, drain: bool = True) -> None:
    # Read (and drop) what the client is still sending before answering: closing a socket with unread
    # bytes makes the kernel reset it, and the client would see a broken connection instead of the 413.
    drained = 0
    while drain and drained <= _DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        drained += len(message.get("body", b""))
    answer = error_response(
        413, "PAYLOAD_TOO_LARGE", f"the body is larger than {limit} bytes", {"limit": limit}
    )
    answer.headers["Connection"] = "close"  # the rest of the body is never read
    await answer(scope, receive, send)
