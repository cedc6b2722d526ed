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
DATA_INVALID: Final = "DataInvalid"
"""A stage processor (or other user code) found the item's data unusable: parked for a person at once."""
WAIT_TIMEOUT: Final = "WaitTimeout"
INVALID_STATE: Final = "InvalidState"
"""A control request (retry, skip, suspend, resume) that does not fit the execution's state."""

CONNECTOR_NOT_FOUND: Final = "ConnectorNotFound"
"""A step names a connector the store does not have (or one of the wrong type)."""
CONNECTOR_READ_ONLY: Final = "ConnectorReadOnly"
"""A writing statement on a connector created without ``allow_writes``."""
SECRET_UNREADABLE: Final = "SecretUnreadable"
"""A connector's sealed configuration does not open on this worker (its key is missing or wrong); retried,
as a worker restarted with the key reads it."""
SQL_ERROR: Final = "SqlError"
"""The database refused the statement (syntax, missing table, constraint), or it is not one we run."""
DATABASE_UNAVAILABLE: Final = "DatabaseUnavailable"
"""A connector's database, or the store holding the connectors, cannot be reached; retried."""
UNEXPECTED_RESPONSE: Final = "UnexpectedResponse"
"""A response without the shape the step asked for (e.g. no list at ``items``)."""
EMAIL_REJECTED: Final = "EmailRejected"
"""The SMTP server refused the message for good (5xx); a 4xx or a connection error is ``SmtpError``."""
SMTP_ERROR: Final = "SmtpError"
CODE_ERROR: Final = "CodeError"
"""``custom_code`` raised (details carry the user's traceback), did not compile, or returned non-JSON."""
CODE_TIMEOUT: Final = "CodeTimeout"
"""``custom_code`` ran past its wall-clock or CPU limit and was killed."""
CODE_MEMORY_EXCEEDED: Final = "CodeMemoryExceeded"
CODE_OUTPUT_TOO_LARGE: Final = "CodeOutputTooLarge"
"""``custom_code`` printed or returned more than ``max_output_bytes`` and was killed."""
OUTBOUND_BLOCKED: Final = "OutboundBlocked"
"""The outbound guard (``core/ssrf.py``) refused the address a step asked for: its class will not change."""
CODE_SANDBOX_UNAVAILABLE: Final = "CodeSandboxUnavailable"
"""``custom_code`` cannot run: the worker has no working sandbox and unsandboxed code is not allowed."""
AI_UNSUPPORTED: Final = "AiUnsupported"
"""The provider cannot do the task (e.g. ``translate`` on the local provider)."""
AI_BAD_RESPONSE: Final = "AiBadResponse"
"""The model's answer is not JSON of the task's shape; retried, as a model may answer better next time."""
AI_PROVIDER_ERROR: Final = "AiProviderError"
"""The provider failed (5xx, timeout, connection); retried."""
AI_REQUEST_REJECTED: Final = "AiRequestRejected"
"""The provider refused the request (4xx other than 429): wrong model, key or input."""

NON_RETRYABLE: Final = frozenset(
    {
        CONFIG_INVALID,
        EXPRESSION_FAILED,
        SECRET_MISSING,
        HTTP_CLIENT_ERROR,
        RESPONSE_TOO_LARGE,
        VALIDATION_FAILED,
        DATA_INVALID,
        CONNECTOR_NOT_FOUND,
        CONNECTOR_READ_ONLY,
        SQL_ERROR,
        UNEXPECTED_RESPONSE,
        EMAIL_REJECTED,
        CODE_ERROR,
        CODE_TIMEOUT,
        CODE_MEMORY_EXCEEDED,
        CODE_OUTPUT_TOO_LARGE,
        AI_UNSUPPORTED,
        AI_REQUEST_REJECTED,
    }
)
"""Data and validation errors: the definition or the data is wrong, so no retry can fix them. An execution
that fails with one is parked (SUSPENDED) for a person at once; any other error is a system error, retried
by the activity's policy and then by the definition's workflow-level ``failure.retries``."""


PARKED_AT_ONCE: Final = frozenset({OUTBOUND_BLOCKED, CODE_SANDBOX_UNAVAILABLE})
"""System errors that no retry fixes either (an address the guard refuses, a worker without a sandbox):
not retried by the failure policy, the execution parks for a person to fix the definition or the worker."""


def is_data_error(code: str) -> bool:
    """Whether an error type means "fix the data", not "try again later"."""
    return code in NON_RETRYABLE
