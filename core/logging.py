"""Process logging: human-readable lines by default, JSON lines (``CONVEYOR_LOG_FORMAT=json``) for machines.

A JSON line carries the execution and step a line belongs to, wherever it was logged from: inside a step
activity the ids come from :func:`step_log_context` (set by the worker's step interceptor, so even a
library's log line inside a step carries them); the SDK's ``activity.logger`` and ``workflow.logger`` add
their own ``temporal_activity`` / ``temporal_workflow`` details, which are folded into the same fields. The
current trace and span ids are added too, to jump from a log line to its trace.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from opentelemetry import trace

from core.settings import Settings

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")

_step: ContextVar[dict[str, Any] | None] = ContextVar("conveyor_step_log_context", default=None)
_STANDARD: Final = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"}
)
"""Attributes every record has; anything else on a record is a caller's ``extra`` and is kept."""


@contextmanager
def step_log_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside the block carries ``fields`` (``execution_id``, ``step_id``, ...)."""
    token = _step.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _step.reset(token)


class StepContextFilter(logging.Filter):
    """Copies the step context onto each record while it is still in the logging call's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_step.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the execution's ids, trace ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        activity_info = extras.pop("temporal_activity", None)
        workflow_info = extras.pop("temporal_workflow", None)
        if isinstance(activity_info, dict):
            line["execution_id"] = activity_info.get("workflow_id")
            line["run_id"] = activity_info.get("workflow_run_id")
            line["step_type"] = activity_info.get("activity_type")
            line["attempt"] = activity_info.get("attempt")
        if isinstance(workflow_info, dict):
            line["execution_id"] = workflow_info.get("workflow_id")
            line["run_id"] = workflow_info.get("run_id")
        line.update(extras)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in line.items() if v is not None}, default=str)


class _ConveyorHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs, told apart so a second call replaces it."""


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, force: bool = True
) -> logging.Handler | None:
    """Send the root logger's lines to ``stream`` (stderr) in the configured format and level; returns the
    handler installed, or ``None`` when ``force=False`` found logging configured already (by a test
    runner or a host app) and left it alone.

    In JSON mode uvicorn's loggers hand their lines to the root logger too, so the API's access log is
    JSON like the rest.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _ConveyorHandler)]
    if not force and len(root.handlers) > len(ours):
        return None
    for handler in ours:
        root.removeHandler(handler)
    handler = _ConveyorHandler(stream or sys.stderr)
    handler.addFilter(StepContextFilter())
    json_lines = settings.log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    if json_lines:
        for name in UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
    return handler
