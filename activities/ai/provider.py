"""What every ``ai_process`` provider implements, and the task results both providers share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from workflows.steps import AiProcessConfig


@dataclass(frozen=True)
class AiJob:
    """One task for a provider: the step's config and how to run it."""

    config: AiProcessConfig
    model: str | None
    timeout: float
    backoff: timedelta | None = None
    """Wait before the next attempt after a transient failure (jittered by the step's retry policy)."""


@dataclass
class AiAnswer:
    """A provider's result: the step output and what to log about the call."""

    output: dict[str, Any]
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


class AiProvider(Protocol):
    """Runs the five tasks; raises ``ApplicationError`` typed from ``workflows.errors`` on failure."""

    name: str

    async def run(self, job: AiJob) -> AiAnswer:
        """The task's output: classify ``{label, confidence, scores}``, extract ``{fields, missing}``,
        summarize ``{summary}``, translate ``{text, language}``, enrich the record with added fields."""
        ...


def as_text(content: Any, *, keys: bool = True) -> str:
    """The text a task reads from ``text`` or ``data``: a record becomes ``key: value`` lines (or its
    values alone, without ``keys``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return "\n".join(
            f"{key}: {as_text(value, keys=keys)}" if keys else as_text(value, keys=keys)
            for key, value in content.items()
        )
    if isinstance(content, list):
        return "\n".join(as_text(item, keys=keys) for item in content)
    if content is None:
        return ""
    return json.dumps(content) if isinstance(content, bool) else str(content)


def label_keywords(config: AiProcessConfig) -> dict[str, list[str]]:
    """Label -> the keywords given for it (an empty list when only the label was named)."""
    labels = config.labels or []
    return dict(labels) if isinstance(labels, dict) else {label: [] for label in labels}


def field_types(config: AiProcessConfig) -> dict[str, str | None]:
    """Field name -> the type asked for (None: any)."""
    fields = config.fields or []
    return dict(fields) if isinstance(fields, dict) else dict.fromkeys(fields)


def enriched(content: Any, added: dict[str, Any]) -> dict[str, Any]:
    """A record with derived fields added; the record's own fields win over derived ones."""
    record = content if isinstance(content, dict) else {"text": as_text(content)}
    return {**added, **record}
