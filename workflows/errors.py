"""Error types steps fail with (``ApplicationError.type``), named once for activities and the interpreter."""

from __future__ import annotations

from typing import Final

CONFIG_INVALID: Final = "ConfigInvalid"
EXPRESSION_FAILED: Final = "ExpressionFailed"
SECRET_MISSING: Final = "SecretMissing"
HTTP_CLIENT_ERROR: Final = "HttpClientError"
HTTP_SERVER_ERROR: Final = "HttpServerError"
HTTP_TRANSPORT_ERROR: Final = "HttpTransportError"
HTTP_TIMEOUT: Final = "HttpTimeout"
RATE_LIMITED: Final = "RateLimited"
RESPONSE_TOO_LARGE: Final = "ResponseTooLarge"
STEP_TIMEOUT: Final = "StepTimeout"
CANCELLED: Final = "Cancelled"
FAILED_BY_DEFINITION: Final = "FAILED_BY_DEFINITION"

VALIDATION_FAILED: Final = "ValidationFailed"
INPUT_INVALID: Final = "InputInvalid"
INVALID_STATE: Final = "InvalidState"
"""A control request (retry, skip, suspend, resume) that does not fit the execution's state."""

NON_RETRYABLE: Final = frozenset(
    {
        CONFIG_INVALID,
        EXPRESSION_FAILED,
        SECRET_MISSING,
        HTTP_CLIENT_ERROR,
        RESPONSE_TOO_LARGE,
        VALIDATION_FAILED,
    }
)
"""Data and validation errors: the definition or the data is wrong, so no retry can fix them. An execution
that fails with one is parked (SUSPENDED) for a person at once; any other error is a system error, retried
by the activity's policy and then by the definition's workflow-level ``failure.retries``."""


def is_data_error(code: str) -> bool:
    """Whether an error type means "fix the data", not "try again later"."""
    return code in NON_RETRYABLE
