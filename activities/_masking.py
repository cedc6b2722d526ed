"""Secret values never leave an activity: outputs, log lines and error messages are masked on the way out.

Activities substitute ``{{ secrets.NAME }}`` only for the call they make, but a server may echo a token back,
or an error may quote a URL that carries one; whatever an activity returns or raises goes into the
workflow's history, so this interceptor replaces every configured secret value with ``***`` first.

Connector credentials are known only to the activity that opened the connector: it hands them to
:func:`mask_in_this_run`, and they are masked like the configured secrets in that run's result, error and
log records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core.connectors import CREDENTIAL_NAME
from workflows.messages import StepOutcome

MASK = "***"
_SHORTEST = 4
"""Secrets shorter than this are masked only where they stand as a credential: masked wherever they occur,
they would mangle ordinary text ("pw" is in "upward", "1" in every number)."""
_CREDENTIAL_BEFORE = (
    r"(?P<lead>://[^\s/?#@:]*:"  # a URL's user: scheme://user:<secret>@host
    # password=<secret>, "token": "<secret>", Authorization: Bearer <secret>
    r"|(?i:[\w.-]*(?:" + CREDENTIAL_NAME.pattern + r")[\w.-]*[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?))"
)
_CREDENTIAL_AFTER = r"(?=[\s\"'&,;)}\]@]|$)"
"""A short secret is masked only as the whole value: ``password=pw`` but not ``password=pwned``."""


class SecretMasker:
    """Replaces known secret values inside strings, lists and dicts: a secret of at least four characters
    wherever it occurs, a shorter one where it stands as a credential (a URL's password, the value after a
    name such as ``password=``, ``"token": ``, or of a dict key such as ``password``)."""

    def __init__(self, values: Iterable[str]) -> None:
        self._given = frozenset(v for v in values if v)
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted((v for v in self._given if len(v) >= _SHORTEST), key=len, reverse=True)
        self._short = frozenset(v for v in self._given if len(v) < _SHORTEST)
        alternatives = "|".join(re.escape(v) for v in sorted(self._short, key=len, reverse=True))
        self._short_credential = (
            re.compile(f"{_CREDENTIAL_BEFORE}(?:{alternatives}){_CREDENTIAL_AFTER}") if self._short else None
        )

    def with_values(self, values: Iterable[str]) -> SecretMasker:
        """A masker of these secrets and ``values`` too."""
        return SecretMasker([*self._given, *values])

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        if self._short_credential is not None:
            value = self._short_credential.sub(lambda found: found["lead"] + MASK, value)
        return value

    def data(self, value: Any) -> Any:
        if not self._given:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {
                self.data(k) if isinstance(k, str) else k: MASK if self._credential_of(k, v) else self.data(v)
                for k, v in value.items()
            }
        return value

    def _credential_of(self, key: Any, value: Any) -> bool:
        """A short secret as the value of a key that names a credential (a longer one is masked anyway)."""
        if not (isinstance(value, str) and isinstance(key, str)):
            return False
        return value in self._short and CREDENTIAL_NAME.search(key) is not None


class _RunSecrets:
    """Secrets one activity run learned (a connector's credentials), masked in what that run emits."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.masker = SecretMasker(())

    def add(self, values: Iterable[str]) -> None:
        self.values.extend(values)
        self.masker = SecretMasker(self.values)


_run_secrets: ContextVar[_RunSecrets | None] = ContextVar("conveyor_run_secrets", default=None)


def mask_in_this_run(values: Iterable[str]) -> None:
    """Mask ``values`` too in what the running activity returns, raises and logs.

    For secrets only the activity knows, such as the credentials of the connector it opened. Outside an
    activity run by :class:`SecretMaskingInterceptor` (a unit test's ``ActivityEnvironment``) it does nothing.
    """
    run = _run_secrets.get()
    if run is not None:
        run.add(values)


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
        run = _RunSecrets()
        token = _run_secrets.set(run)
        try:
            result = await super().execute_activity(input)
        except ApplicationError as exc:
            masker = self._masker.with_values(run.values)
            masked = ApplicationError(
                masker.text(exc.message),
                *(masker.data(d) for d in exc.details),
                type=exc.type,
                non_retryable=exc.non_retryable,
                next_retry_delay=exc.next_retry_delay,
                category=exc.category,
            )
            raise masked from None
        except FailureError:
            raise  # cancellation and the like: Temporal's own, carrying no text of ours
        except Exception as exc:
            # Temporal would record str(exc) and its causes as they are: record the masked message under
            # the same type name, so retry policies that name the type still match.
            masker = self._masker.with_values(run.values)
            raise ApplicationError(masker.text(str(exc)), type=type(exc).__name__) from None
        finally:
            _run_secrets.reset(token)
        if isinstance(result, StepOutcome):
            masker = self._masker.with_values(run.values)
            return replace(result, output=masker.data(result.output), logs=masker.data(result.logs))
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
    run = _run_secrets.get()
    maskers = [*_log_maskers, run.masker] if run is not None else _log_maskers
    if not maskers:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is logging's to report, not ours
        return record
    masked = message
    for masker in maskers:
        masked = masker.text(masked)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        for masker in maskers:
            text = masker.text(text)
        record.exc_text = text
    return record
