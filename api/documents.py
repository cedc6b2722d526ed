"""Reading definition documents from request bodies: JSON, or YAML when the content type says so."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.json_guard import is_json
from core.errors import BadRequest, ConveyorError
from core.untrusted import YAML_TYPES, off_the_loop, parse_json, parse_yaml

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
    """The body as a document object; a clear 400 when it does not parse, is not an object, or is more
    than a document should be (see :mod:`core.untrusted`)."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type in YAML_TYPES:
        document = await off_the_loop(parse_yaml, raw)
    elif is_json(content_type):
        document = await off_the_loop(parse_json, raw)
    else:
        raise UnsupportedMediaType(
            "UNSUPPORTED_MEDIA_TYPE", f"send application/json or application/yaml, not {content_type}"
        )
    if not isinstance(document, dict):
        raise BadRequest("INVALID_DOCUMENT", "a definition document is an object with 'name' and 'steps'")
    return document
