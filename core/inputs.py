"""Execution input checked at the API: defaults filled in, every problem listed in a 422."""

from __future__ import annotations

from typing import Any

from core.errors import Unprocessable
from workflows.inputs import input_problems, with_defaults


def prepare_input(schema: dict[str, Any] | None, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with the schema's defaults filled in; raises ``Unprocessable`` listing each problem."""
    if schema is None:
        return value
    filled = with_defaults(schema, value)
    problems = input_problems(schema, filled)
    if problems:
        raise Unprocessable(
            "INPUT_INVALID", "the input does not match the definition's input schema", {"problems": problems}
        )
    return filled if isinstance(filled, dict) else value
