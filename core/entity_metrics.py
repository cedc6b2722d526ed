"""Prometheus metrics of entities, counted in the process where the work happens.

Transitions are counted where they are requested (the API, or the worker for automation actions);
automation evaluations and SLA breaches in the worker's activities; ``active_tasks_total`` is refreshed
from Temporal visibility by the API (see ``core.entities.refresh_active_tasks``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "workflow_transition",
    "Entity transitions requested, by entity type and result (accepted, invalid_transition, "
    "permission_denied)",
    ["entity_type", "result"],
)
"""Exposed as ``workflow_transition_total``."""

AUTOMATION_EVALUATIONS = Counter(
    "automation_trigger_evaluations",
    "Automation rule evaluations, by rule and outcome (matched, not_matched, error)",
    ["trigger_id", "outcome"],
)
"""Exposed as ``automation_trigger_evaluations_total``."""

SLA_BREACHES = Counter("sla_records_breached", "SLA records that were breached")
"""Exposed as ``sla_records_breached_total``."""

ACTIVE_TASKS = Gauge("active_tasks_total", "Open task entities by state", ["state"])
