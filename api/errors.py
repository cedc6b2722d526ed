"""Every error leaves the API as ``{"error_code", "message", "details"}`` with its status, mapped here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ConveyorError
from workflows.definition import DefinitionInvalid, json_path

log = logging.getLogger("conveyor.api")


class ErrorBody(BaseModel):
    """The JSON body of every error answer."""

    error_code: str
    message: str
    details: dict[str, Any] = {}


def error_response(
    status: int, error_code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    """A JSON error answer in the API's one format."""
    return JSONResponse(
        status_code=status, content={"error_code": error_code, "message": message, "details": details or {}}
    )


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map our exceptions, FastAPI's validation errors and plain HTTP errors to the error body."""

    @app.exception_handler(ConveyorError)
    async def conveyor_error(_request: Request, exc: ConveyorError) -> JSONResponse:
        return error_response(exc.status, exc.error_code, exc.message, exc.details)

    @app.exception_handler(DefinitionInvalid)
    async def definition_invalid(_request: Request, exc: DefinitionInvalid) -> JSONResponse:
        problems = [p.model_dump() for p in exc.problems]
        return error_response(
            422,
            "DEFINITION_INVALID",
            f"the definition has {len(problems)} problem(s)",
            {"problems": problems},
        )

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "path": json_path(tuple(str(p) if not isinstance(p, int) else p for p in e["loc"])),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        return error_response(422, "VALIDATION_ERROR", "the request is not valid", {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def store_busy(_request: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        # Every pooled connection is taken: the caller may retry; this is load, not a bug.
        response = error_response(503, "STORE_BUSY", "the database is busy; retry shortly")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A 5xx is a bug: log it with the route so it can be found and fixed.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error; it has been logged")
