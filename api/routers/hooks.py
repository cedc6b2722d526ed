"""Webhook ingress: ``POST /hooks/{trigger_id}``, authenticated by the sender's signature, not an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import SealerDep, SessionDep, SettingsDep, TemporalDep
from api.errors import ErrorBody, error_response
from core import triggers
from core.signatures import SignatureInvalid

router = APIRouter(tags=["webhooks"])


class DeliveryAnswer(BaseModel):
    execution_id: str
    delivery_id: str
    duplicate: bool


class BodyTooLarge(Exception):
    """The body went past the limit while it was read."""


async def _read_body(request: Request, limit: int) -> bytes:
    # Read in chunks and stop at the limit: a sender without Content-Length must not make us buffer it all.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/hooks/{trigger_id}",
    status_code=202,
    response_model=DeliveryAnswer,
    responses={
        200: {"model": DeliveryAnswer, "description": "a duplicate delivery: the execution it started"},
        401: {"model": ErrorBody, "description": "the signature is missing, wrong or stale"},
        404: {"model": ErrorBody, "description": "no active webhook trigger with this id"},
        413: {"model": ErrorBody, "description": "the body is larger than webhook_max_body_bytes"},
    },
)
async def receive(
    trigger_id: str,
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    sealer: SealerDep,
) -> JSONResponse:
    """Verify a delivery's signature, then start one execution per delivery id (202; a duplicate: 200)."""
    limit = settings.webhook_max_body_bytes
    length = request.headers.get("content-length", "")
    too_large = error_response(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {limit} bytes")
    if length.isdigit() and int(length) > limit:
        return too_large
    trigger, config = await triggers.webhook_trigger(session, trigger_id=trigger_id)
    try:
        body = await _read_body(request, limit)
    except BodyTooLarge:
        return too_large
    try:
        accepted = await triggers.accept_delivery(
            session,
            temporal,
            settings,
            sealer=sealer,
            trigger=trigger,
            config=config,
            body=body,
            headers=request.headers,
            query=request.query_params,
        )
    except SignatureInvalid as exc:
        return error_response(401, "SIGNATURE_INVALID", exc.reason, {"scheme": config.scheme.value})
    answer = DeliveryAnswer(
        execution_id=accepted.execution_id, delivery_id=accepted.delivery_id, duplicate=not accepted.created
    )
    return JSONResponse(answer.model_dump(), status_code=202 if accepted.created else 200)
