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

NON_RETRYABLE: Final = frozenset(
    {CONFIG_INVALID, EXPRESSION_FAILED, SECRET_MISSING, HTTP_CLIENT_ERROR, RESPONSE_TOO_LARGE}
)
"""Types no retry can fix: the definition or the data is wrong."""
