"""The dataclasses that cross Temporal for entities: workflow input, update, query, activity requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EntityRecord:
    """An entity as the API shows it: its state and its fields (``data``)."""

    id: str
    type: str
    state: str
    data: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str
    seq: int = 0
    """Transitions applied so far (across continue-as-new)."""


@dataclass
class TransitionRecord:
    """One accepted transition: the audit entry."""

    seq: int
    from_state: str
    to_state: str
    actor: str
    role: str
    at: str
    notes: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


@dataclass
class SlaTracking:
    """Where the entity stands against its SLA rule (``rule`` is the rule's document, or None)."""

    rule: dict[str, Any] | None = None
    config_id: str | None = None
    period: int = 0
    tracking: bool = False
    started_at: str | None = None
    running_since: float | None = None
    """Epoch seconds tracking last (re)started; None while paused or not tracking."""
    accumulated_s: float = 0.0
    """Tracked seconds before ``running_since`` (earlier running spans, pauses excluded)."""
    breached: bool = False


@dataclass
class EntityEvent:
    """A domain event an entity emits: ``entity.transitioned`` or ``sla.breached``."""

    event: str
    event_id: str
    entity_type: str
    entity_id: str
    entity: dict[str, Any]
    """The entity's fields plus ``state``, as the predicate's ``event.entity`` reads them."""
    at: str
    from_state: str | None = None
    to_state: str | None = None
    actor: str | None = None
    sla: dict[str, Any] | None = None
    automations: list[dict[str, Any]] = field(default_factory=list)
    """The lifecycle's own automation rules (the store's are added by the activity)."""


@dataclass
class SlaRecordWrite:
    """An SLA record as the entity workflow last saw it; written by upsert on ``id``."""

    id: str
    entity_type: str
    entity_id: str
    task_type: str | None
    sla_config_id: str | None
    target_minutes: float
    started_at: str
    completed_at: str | None = None
    actual_minutes: float | None = None
    breached: bool = False
    breached_at: str | None = None


@dataclass
class EntityStart:
    """Input of ``EntityWorkflow``; a continue-as-new carries everything forward in the same shape."""

    entity: EntityRecord
    lifecycle: dict[str, Any]
    sla: SlaTracking = field(default_factory=SlaTracking)
    transitions: list[TransitionRecord] = field(default_factory=list)
    continue_after: int = 500
    """Transitions and timers handled in one run before continuing as new."""
    records: list[SlaRecordWrite] = field(default_factory=list)
    """SLA records not yet written (carried over a continue-as-new)."""
    events: list[EntityEvent] = field(default_factory=list)
    """Events not yet dispatched (carried over a continue-as-new)."""


@dataclass
class TransitionRequest:
    """Update ``transition``: move to ``target_state``; the actor is the caller's API key."""

    target_state: str
    actor: str
    role: str
    permissions: list[str] = field(default_factory=list)
    notes: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    """A repeat with the same id returns the first answer instead of moving again."""


@dataclass
class TransitionResult:
    """The entity after the transition, and the transition's audit entry."""

    entity: EntityRecord
    transition: TransitionRecord
    repeated: bool = False


@dataclass
class EntityView:
    """Query ``entity``: the record, its transitions and its SLA tracking."""

    entity: EntityRecord
    transitions: list[TransitionRecord]
    sla: SlaTracking
    terminal: bool
