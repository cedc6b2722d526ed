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


_ERROR_DESCRIPTIONS = {
    400: "the request is malformed or asks for something impossible",
    401: "no valid API key",
    403: "the API key's role may not do this",
    404: "no such resource",
    409: "the request conflicts with the resource's current state",
    413: "the body is larger than the configured limit",
    415: "the body's content type is not one this route reads",
    422: "a field is invalid; details.problems names each one by its path",
}
_WRITES = frozenset({"post", "put", "patch", "delete"})


def document_errors(app: FastAPI) -> None:
    """Declare the error body in the OpenAPI of every operation, for each status it can answer with.

    Errors come from one place (this module), so they are documented in one place too: 400, 413 and 422
    everywhere (FastAPI's own 422 schema is replaced, as our handler answers with ``ErrorBody``), 401 and
    403 where a key is required, 404 and 409 where the path names a resource or on writes, 415 on writes.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "ErrorBody", ErrorBody.model_json_schema()
        )
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                statuses = {400, 413, 422}
                if operation.get("security"):
                    statuses |= {401, 403}
                if "{" in path:
                    # The resource may be in a state that refuses this (an archived definition).
                    statuses |= {404, 409}
                if method in _WRITES:
                    # A write may name another resource in its body (a lifecycle, a connector, a definition).
                    statuses |= {404, 409, 415}
                responses = operation.setdefault("responses", {})
                for status in sorted(statuses):
                    documented = responses.setdefault(
                        str(status), {"description": _ERROR_DESCRIPTIONS[status]}
                    )
                    if status == 422 or "content" not in documented:
                        documented["content"] = body
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Map our exceptions, FastAPI's validation errors and plain HTTP errors to the error body, and
    document them in the OpenAPI schema."""
    document_errors(app)

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

    @app.exception_handler(RecursionError)
    async def too_deep(_request: Request, _exc: RecursionError) -> JSONResponse:
        # JSON nested thousands deep breaks the parser or the validators before any route code runs.
        return error_response(400, "INPUT_TOO_DEEP", "the JSON is nested too deeply")

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
