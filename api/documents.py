"""Reading definition documents from request bodies: JSON, or YAML when the content type says so."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import yaml
from fastapi import Request

from core.errors import BadRequest, ConveyorError

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A definition document (see ARCHITECTURE.md section 3)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
"""OpenAPI for routes that read the body themselves."""


class UnsupportedMediaType(ConveyorError):
    status = 415


async def read_document(request: Request) -> dict[str, Any]:
    """The body as a document object; a clear 400 when it does not parse or is not an object."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type in YAML_TYPES:
        try:
            document = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise BadRequest("INVALID_YAML", f"the body is not valid YAML{line}") from None
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise BadRequest("INVALID_JSON", f"the body is not valid JSON: {exc}") from None
    else:
        raise UnsupportedMediaType(
            "UNSUPPORTED_MEDIA_TYPE", f"send application/json or application/yaml, not {content_type}"
        )
    if not isinstance(document, dict):
        raise BadRequest("INVALID_DOCUMENT", "a definition document is an object with 'name' and 'steps'")
    # YAML knows dates and other types JSON does not; the stored snapshot must be plain JSON.
    plain: dict[str, Any] = json.loads(json.dumps(document, default=_jsonable))
    return plain


def _jsonable(value: object) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise BadRequest("INVALID_DOCUMENT", f"the document holds a {type(value).__name__}, which JSON cannot")
