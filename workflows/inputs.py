"""Execution input against a definition's ``input`` JSON Schema (pure: the API and the interpreter use it)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from jsonschema import Draft202012Validator

from workflows.definition import json_path


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the ``default`` of object properties filled in where it leaves them out."""
    value = deepcopy(value)
    _fill(schema, value)
    return value


def _fill(schema: dict[str, Any], value: Any) -> None:
    if not isinstance(value, dict):
        return
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        if key not in value and "default" in sub:
            value[key] = deepcopy(sub["default"])
        elif key in value:
            _fill(sub, value[key])


def input_problems(schema: dict[str, Any] | None, value: Any) -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema``, each with its JSON path under ``$.input``."""
    if schema is None:
        return []
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [{"path": json_path(("input", *e.absolute_path)), "message": e.message} for e in errors]


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with a JSON Merge Patch (RFC 7396) applied: objects merge, ``null`` deletes a key."""
    if not isinstance(patch, dict):
        return deepcopy(patch)
    merged = deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
