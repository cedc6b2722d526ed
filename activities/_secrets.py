"""Secret substitution for activities: the only place ``{{ secrets.NAME }}`` becomes a value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from workflows import errors, expressions


def with_secrets(config: dict[str, Any], secrets: Mapping[str, SecretStr]) -> dict[str, Any]:
    """``config`` with secret placeholders replaced; a missing secret is a non-retryable step error."""
    try:
        resolved: dict[str, Any] = expressions.resolve_secrets(
            config, {name.lower(): value.get_secret_value() for name, value in secrets.items()}
        )
    except expressions.ExpressionError as exc:
        raise ApplicationError(exc.reason, type=errors.SECRET_MISSING, non_retryable=True) from None
    return resolved
