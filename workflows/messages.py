"""The dataclasses that cross Temporal: workflow input and result, queries, activity requests.

One dataclass in and one out everywhere, so fields can be added without breaking running executions.
"""

from __future__ import annotations

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


@dataclass
class StepOutcome:
    """Result of every step activity."""

    output: Any
    attempt: int = 1
