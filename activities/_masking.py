"""Secret values never leave an activity: outputs, log lines and error messages are masked on the way out.

Activities substitute ``{{ secrets.NAME }}`` only for the call they make, but a server may echo a token back,
or an error may quote a URL that carries one; whatever an activity returns or raises goes into the
workflow's history, so this interceptor replaces every configured secret value with ``***`` first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


_log_maskers: list[SecretMasker] = []
_plain_factory: Callable[..., logging.LogRecord] | None = None


@contextmanager
def masked_logs(masker: SecretMasker) -> Iterator[None]:
    """Mask ``masker``'s secrets in every log record the process makes while the block runs.

    Libraries log what they were given: httpx logs each request's URL (query strings carry tokens), the
    Temporal SDK logs activity failures with their tracebacks. Records are masked where they are made (a
    log record factory), so every handler — files, the console, a test's log capture — sees only ``***``.
    """
    global _plain_factory
    if _plain_factory is None:
        _plain_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_masked_record)
    _log_maskers.append(masker)
    try:
        yield
    finally:
        _log_maskers.remove(masker)


def _masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _plain_factory is not None
    record = _plain_factory(*args, **kwargs)
    if not _log_maskers:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is logging's to report, not ours
        return record
    masked = message
    for masker in _log_maskers:
        masked = masker.text(masked)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        for masker in _log_maskers:
            text = masker.text(text)
        record.exc_text = text
    return record
