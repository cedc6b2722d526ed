"""Every name that crosses a process boundary: workflow, query, update and signal names, search attributes.

The API, the worker, the tests and the README all take names from here, so a rename is one edit.
"""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey

DEFINITION_WORKFLOW: Final = "DefinitionWorkflow"
"""Workflow type of the interpreter that runs every definition."""

QUERY_DESCRIBE: Final = "describe"
"""Query: the execution's state, steps and output so far."""

QUERY_HISTORY: Final = "history"
"""Query: the recorded state transitions."""

QUERY_EVENTS: Final = "events"
"""Query (``EventsRequest``): the execution's events after a sequence number, for the SSE stream."""

QUERY_LOGS: Final = "logs"
"""Query: the execution's log entries."""

UPDATE_RETRY: Final = "retry"
"""Update (``RetryRequest``): resume a SUSPENDED execution by retrying its failed step (or another)."""

UPDATE_SKIP: Final = "skip"
"""Update (``SkipRequest``): resume a SUSPENDED execution past its failed step with a given output."""

UPDATE_SUSPEND: Final = "suspend"
"""Update (``ControlRequest``): park a running execution at its next step boundary."""

UPDATE_RESUME: Final = "resume"
"""Update (``ControlRequest``): continue an execution suspended by ``suspend``."""

UPDATE_ADVANCE: Final = "advance"
"""Update (``SkipRequest``): move a pipeline item past the stage it is at (queued, running or parked),
with ``output`` as that stage's output."""

UPDATE_SETTLED: Final = "conveyor:settled"
"""Update (``ControlRequest``): answers once the execution is SUSPENDED, parked for an operator; a start
with ``wait`` sends it to answer then instead of running out its wait. The colon keeps it apart from the
names ``wait`` steps may use (the dynamic update handler serves those)."""

STAGE_NEW: Final = "NEW"
"""``ConveyorStage`` of a pipeline item before its first stage."""

STAGE_DONE: Final = "DONE"
"""``ConveyorStage`` of a pipeline item that finished its last stage."""

LANE_WORKFLOW: Final = "LaneWorkflow"
"""Workflow type of the admission lane of one (definition, key): id ``lane/<definition>[/<key>]``."""

SIGNAL_LANE_ACQUIRE: Final = "acquire"
"""Signal to a lane (``LaneRequest``): an execution asks for a slot (sent with signal-with-start)."""

SIGNAL_LANE_RELEASE: Final = "release"
"""Signal to a lane (``LaneRelease``): an execution ended, or gave up waiting; idempotent."""

SIGNAL_LANE_VERDICT: Final = "lane_verdict"
"""Signal from a lane to an execution (``LaneVerdict``): run now, or skip. ``cancel_new`` and
``cancel_oldest`` use Temporal cancellation with the reason instead."""

QUERY_LANE: Final = "lane"
"""Query on a lane: its limits, running executions, queue and recent starts (``LaneState``)."""

ACTIVITY_LANE_ACQUIRE: Final = "lane_acquire"
"""Activity: signal-with-start the execution's lane (workflow code cannot signal-with-start)."""

ACTIVITY_LANE_CHECK: Final = "lane_check"
"""Activity: which of a lane's slot holders are no longer running (terminated without releasing)."""

ENTITY_WORKFLOW: Final = "EntityWorkflow"
"""Workflow type of one entity (a task, an action plan, ...): id ``entity/<type>/<id>``."""

QUERY_ENTITY: Final = "entity"
"""Query on an entity: its record, transitions and SLA tracking (``EntityView``)."""

UPDATE_TRANSITION: Final = "transition"
"""Update (``TransitionRequest``): move an entity to another state; the validator rejects bad moves."""

ACTIVITY_ENTITY_SLA: Final = "entity_sla_record"
"""Activity: write (upsert) an entity's SLA record."""

ACTIVITY_ENTITY_EVENT: Final = "entity_event"
"""Activity: evaluate the automation rules on an entity's domain event and run their actions."""

SA_DEFINITION: Final = SearchAttributeKey.for_keyword("ConveyorDefinition")
SA_VERSION: Final = SearchAttributeKey.for_int("ConveyorVersion")
SA_STATE: Final = SearchAttributeKey.for_keyword("ConveyorState")
SA_STAGE: Final = SearchAttributeKey.for_keyword("ConveyorStage")
SA_TRIGGER: Final = SearchAttributeKey.for_keyword("ConveyorTrigger")
SA_ERROR: Final = SearchAttributeKey.for_keyword("ConveyorError")
"""The error type an execution last failed or was suspended with (for stats and filters)."""

SA_ENTITY_TYPE: Final = SA_DEFINITION
"""On entity workflows the definition attribute holds the lifecycle type (``task``), saving one of the
dev server's ten Keyword attributes; queries tell the two apart by ``WorkflowType``."""
SA_TASK_TYPE: Final = SearchAttributeKey.for_keyword("ConveyorTaskType")
SA_PRIORITY: Final = SearchAttributeKey.for_keyword("ConveyorPriority")
SA_ASSIGNEE: Final = SearchAttributeKey.for_keyword("ConveyorAssignee")
"""Entity fields that lists filter on (``GET /api/v1/entities/task?task_type=intake``); entities reuse
``ConveyorState`` for their state."""

SEARCH_ATTRIBUTES: Final = (
    SA_DEFINITION,
    SA_VERSION,
    SA_STATE,
    SA_STAGE,
    SA_TRIGGER,
    SA_ERROR,
    SA_TASK_TYPE,
    SA_PRIORITY,
    SA_ASSIGNEE,
)
"""Registered on the dev server at start (``--search-attribute Name=Type``)."""


def search_attribute_flags() -> list[str]:
    """The ``temporal server start-dev`` arguments that register Conveyor's search attributes."""
    kinds = {SA_VERSION.name: "Int"}
    flags: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={kinds.get(key.name, 'Keyword')}"]
    return flags
