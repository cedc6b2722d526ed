"""Secret values never leave an activity: outputs, log lines and error messages are masked on the way out.

Activities substitute ``{{ secrets.NAME }}`` only for the call they make, but a server may echo a token back,
or an error may quote a URL that carries one; whatever an activity returns or raises goes into the
workflow's history, so this interceptor replaces every configured secret value with ``***`` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from workflows.messages import StepOutcome

MASK = "***"
_SHORTEST = 4
"""Values shorter than this are not masked: they would mangle ordinary text and protect little."""


class SecretMasker:
    """Replaces known secret values inside strings, lists and dicts."""

    def __init__(self, values: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted({v for v in values if len(v) >= _SHORTEST}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {self.data(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        return value


class SecretMaskingInterceptor(Interceptor):
    """Worker interceptor applying :class:`SecretMasker` to every activity's result and error."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _MaskingInbound(next, self._masker)


class _MaskingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, masker: SecretMasker) -> None:
        super().__init__(next)
        self._masker = masker

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            result = await super().execute_activity(input)
        except ApplicationError as exc:
            masked = ApplicationError(
                self._masker.text(exc.message),
                *(self._masker.data(d) for d in exc.details),
                type=exc.type,
                non_retryable=exc.non_retryable,
                next_retry_delay=exc.next_retry_delay,
                category=exc.category,
            )
            raise masked from None
        if isinstance(result, StepOutcome):
            return replace(
                result, output=self._masker.data(result.output), logs=self._masker.data(result.logs)
            )
        return result
