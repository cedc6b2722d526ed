"""Execution input against a definition's ``input`` JSON Schema: defaults filled in, every problem listed."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from jsonschema import Draft202012Validator

from core.errors import Unprocessable
from workflows.definition import json_path


def prepare_input(schema: dict[str, Any] | None, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with the schema's defaults filled in; raises ``Unprocessable`` listing each problem."""
    if schema is None:
        return value
    filled = _with_defaults(schema, deepcopy(value))
    problems = [
        {"path": json_path(("input", *error.absolute_path)), "message": error.message}
        for error in sorted(
            Draft202012Validator(schema).iter_errors(filled), key=lambda e: list(e.absolute_path)
        )
    ]
    if problems:
        raise Unprocessable(
            "INPUT_INVALID", "the input does not match the definition's input schema", {"problems": problems}
        )
    return filled if isinstance(filled, dict) else value


def _with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill ``default`` of object properties, recursively, where the value leaves them out."""
    if not isinstance(value, dict):
        return value
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        if key not in value and "default" in sub:
            value[key] = deepcopy(sub["default"])
        elif key in value:
            value[key] = _with_defaults(sub, value[key])
    return value
