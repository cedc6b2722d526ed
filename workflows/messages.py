"""The dataclasses that cross Temporal: workflow input and result, queries, activity requests.

One dataclass in and one out everywhere, so fields can be added without breaking running executions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ExecutionInput:
    """Input of ``DefinitionWorkflow``: the pinned definition snapshot and the execution input."""

    definition: dict[str, Any]
    name: str
    version: int
    input: dict[str, Any] = field(default_factory=dict)
    trigger: str = "api"
    actor: str | None = None
    children: dict[str, ChildDefinition] = field(default_factory=dict)
    """Snapshots of the definitions its ``sub_workflow`` steps run, pinned when the execution started."""
    context: dict[str, Any] | None = None
    """For a ``foreach`` batch run as a child: the parent's ``steps`` and ``vars`` its templates read."""
    emit_lifecycle: bool = False
    """Publish ``execution.completed`` / ``execution.failed`` at the end: some event trigger listens."""


@dataclass
class ChildDefinition:
    """A definition version a ``sub_workflow`` step runs (key ``name`` or ``name@version``)."""

    name: str
    version: int
    definition: dict[str, Any]


@dataclass
class StepRecord:
    """What happened to one step."""

    id: str
    type: str
    status: str = "pending"
    attempts: int = 0
    started_at: str | None = None
    closed_at: str | None = None
    error: StepError | None = None


@dataclass
class StepError:
    """Why a step (or the execution) failed."""

    code: str
    message: str
    step: str | None = None
    details: dict[str, Any] | None = None


@dataclass
class Transition:
    """One recorded state change."""

    from_state: str
    to_state: str
    at: str
    reason: str = ""
    step: str | None = None
    stage: str | None = None
    actor: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionSnapshot:
    """The execution as the ``describe`` query and the workflow result show it."""

    state: str
    definition: str
    version: int
    steps: list[StepRecord]
    current_step: str | None = None
    stage: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: StepError | None = None
    retry_count: int = 0
    started_at: str | None = None
    closed_at: str | None = None


@dataclass
class StepRequest:
    """Input of every step activity: the rendered ``with`` (secrets still as placeholders)."""

    execution_id: str
    step_id: str
    config: dict[str, Any]
    retry: dict[str, float] | None = None
    """``initial_interval``, ``backoff``, ``max_interval`` (seconds) for jittered transient retries."""
    definition: str | None = None
    """The definition's name; set for ``stage`` steps, whose processors see it as the pipeline."""


@dataclass
class StepOutcome:
    """Result of every step activity."""

    output: Any
    attempt: int = 1
    logs: list[dict[str, Any]] = field(default_factory=list)
    """Lines for the execution's log (``level``, ``message``, ``metadata``), e.g. an HTTP call summary."""


@dataclass
class ExecutionEvent:
    """One entry of an execution's event stream; ``seq`` counts from 1 and is the SSE event id.

    Types: started, step_started, step_completed, step_failed, step_skipped, waiting, suspended, resumed,
    retrying, completed, failed, cancelled.
    """

    seq: int
    type: str
    at: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventsRequest:
    """Input of the ``events`` query: the events after sequence number ``after``."""

    after: int = 0


@dataclass
class LogEntry:
    """One line of an execution's log: step lifecycle, HTTP call summaries, retries, custom code output."""

    seq: int
    at: str
    level: str
    message: str
    step: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetryRequest:
    """``retry`` update: resume a suspended execution, from its failed step or ``from_step``."""

    from_step: str | None = None
    input_patch: dict[str, Any] | None = None
    actor: str | None = None


@dataclass
class SkipRequest:
    """``skip`` update: mark the failed step skipped with ``output`` and go on."""

    output: Any = None
    actor: str | None = None


@dataclass
class AdvanceRequest:
    """``advance`` update: move a pipeline item past ``stage`` (the one it is at when None), which takes
    ``output`` as its output."""

    stage: str | None = None
    output: Any = None
    actor: str | None = None


@dataclass
class ControlRequest:
    """``suspend`` / ``resume`` updates."""

    actor: str | None = None
    reason: str = ""


@dataclass
class ControlResult:
    """What an accepted control update did."""

    state: str
    message: str = ""


@dataclass
class CancelRequest:
    """Who cancelled an execution, and why.

    A Temporal cancellation carries nothing the workflow sees but a reason text, so the API sends this
    there as JSON (:meth:`encode`); a reason in any other form (the Temporal CLI's, an admission lane's) is
    the reason itself, with no actor.
    """

    actor: str | None = None
    reason: str = ""

    def encode(self) -> str:
        return json.dumps({"actor": self.actor, "reason": self.reason}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> CancelRequest:
        try:
            data = json.loads(text or "")
        except ValueError:
            return cls(reason=text or "")
        if isinstance(data, dict) and set(data) == {"actor", "reason"}:
            actor, reason = data["actor"], data["reason"]
            if (actor is None or isinstance(actor, str)) and isinstance(reason, str):
                return cls(actor=actor, reason=reason)
        return cls(reason=text or "")
