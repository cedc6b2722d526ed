"""Every JSON body is read strictly before a route sees it (:mod:`core.untrusted`).

Routes read their bodies in several ways (FastAPI's models, ``request.json()``, the definition and webhook
readers), and Python's ``json`` accepts what JSON does not: lone surrogates, ``NaN``, ``Infinity``, numbers
that overflow to infinity. Checking here, once, means no route can start work on such a body and fail after
it (a started execution answered with a 500, a client retrying into a duplicate).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.untrusted import InputRefused, off_the_loop, parse_json

_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_json(content_type: str) -> bool:
    """Whether a body of ``content_type`` is read as JSON (FastAPI reads a body without one as JSON)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in ("", "application/json") or kind.endswith("+json")


class JsonGuard:
    """Pure ASGI middleware: 400 with the JSON path of the first bad value, before the app runs."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self._app(scope, receive, send)
            return
        content_types = [value for name, value in scope["headers"] if name == b"content-type"]
        if len(content_types) > 1:
            # Readers disagree on which one counts (the first, the last): one body, one type.
            answer = error_response(
                400, "AMBIGUOUS_CONTENT_TYPE", "the request has more than one Content-Type header"
            )
            await answer(scope, receive, send)
            return
        content_type = content_types[0].decode("latin-1") if content_types else ""
        if not is_json(content_type):
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.strip():
            try:
                await off_the_loop(parse_json, body)
            except InputRefused as exc:
                answer = error_response(exc.status, exc.error_code, exc.message, exc.details)
                await answer(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)
