"""The Temporal codec server: ``POST /codec/encode`` and ``/codec/decode`` for the Web UI and the CLI.

Temporal's remote codec protocol: the body is a ``Payloads`` message in protobuf JSON
(``{"payloads": [{"metadata": {...}, "data": "<base64>"}]}``), the answer the same shape, 400 for a body
that does not parse or payloads that do not decode. Point ``temporal workflow show --codec-endpoint`` or the
Web UI's codec setting at ``<api>/codec``; they append ``/encode`` and ``/decode`` and send ``X-Namespace``.

Decoding runs the API's own codec chain (``core.codec`` then the claim check of ``core.payloads``), so the
reader sees large payloads whole as well as decrypted. Decoding shows data, so it wants a viewer key;
encoding lets the UI send signals and start workflows, so it wants an operator key. Browsers may call it only
from ``CONVEYOR_TEMPORAL_UI_ORIGIN`` (:class:`CodecCors`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from api.auth import Operator, Viewer
from api.deps import TemporalDep
from core.errors import BadRequest

router = APIRouter(prefix="/codec", tags=["codec"])

PREFIX = "/codec/"
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"

_PAYLOADS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["payloads"],
                    "properties": {
                        "payloads": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "metadata": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string", "format": "byte"},
                                    },
                                    "data": {"type": "string", "format": "byte"},
                                },
                            },
                        }
                    },
                }
            }
        },
    }
}


@router.post("/encode", openapi_extra=_PAYLOADS_BODY)
async def encode(request: Request, temporal: TemporalDep, _caller: Operator) -> JSONResponse:
    """Encode payloads as Conveyor stores them in Temporal (encrypted, large ones by reference)."""
    return await _apply(request, temporal.data_converter.payload_codec, "encode")


@router.post("/decode", openapi_extra=_PAYLOADS_BODY)
async def decode(request: Request, temporal: TemporalDep, _caller: Viewer) -> JSONResponse:
    """Decode payloads from Temporal's history into what the workflow saw."""
    return await _apply(request, temporal.data_converter.payload_codec, "decode")


async def _apply(request: Request, codec: Any, operation: Literal["encode", "decode"]) -> JSONResponse:
    body = await request.body()
    payloads = Payloads()
    try:
        json_format.Parse(body or b"{}", payloads)
    except json_format.ParseError as exc:
        raise BadRequest("BAD_REQUEST", f"the body is not Payloads in protobuf JSON: {exc}") from None
    items = list(payloads.payloads)
    if codec is not None:
        try:
            items = await (codec.encode(items) if operation == "encode" else codec.decode(items))
        except (ValueError, OSError) as exc:
            # An unknown key, tampered ciphertext or a blob that is gone: the payload cannot be read here.
            raise BadRequest("CODEC_FAILED", f"cannot {operation} the payloads: {exc}") from None
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=items)))


class CodecCors:
    """CORS for ``/codec/*`` only, and only for the configured Temporal UI origin (no origin: no CORS).

    A middleware rather than route code, so error answers (401, 400) carry the headers too and the browser
    can show them, and preflight requests are answered before any authentication.
    """

    def __init__(self, app: ASGIApp, origin: Callable[[], str | None]) -> None:
        self._app = app
        self._origin = origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self._app(scope, receive, send)
            return
        allowed = self._origin()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        matches = allowed is not None and origin == allowed.rstrip("/")
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            answer = Response(status_code=204 if matches else 403)
            if matches:
                answer.headers.update(_cors_headers(origin or ""))
                answer.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
                answer.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
                answer.headers["Access-Control-Max-Age"] = "600"
            await answer(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and matches:
                MutableHeaders(scope=message).update(_cors_headers(origin or ""))
            await send(message)

        await self._app(scope, receive, send_with_cors)


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
