"""Admission lanes: the messages between executions and their ``LaneWorkflow``, and the two activities a
lane needs from outside workflow code.

Workflow code cannot signal-with-start, so an execution reaches its lane through :meth:`lane_acquire`;
the lane answers with a signal (or a cancellation) to the execution. The messages live here, not in
``workflows.lanes``, because a workflow module must not be passed through the sandbox while the
interpreter has to import them.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from core import names

MAX_KEY_CHARS = 200
"""Longer lane keys are replaced by their digest, keeping workflow ids short."""


@dataclass
class LaneLimits:
    """A definition's ``limits`` as its lane applies them (the latest request's win)."""

    max_concurrent: int | None = None
    per_minute: int | None = None
    on_limit: str = "queue"


@dataclass
class LaneRequest:
    """Signal ``acquire``: the run ``run_id`` of ``execution_id`` asks its lane for a slot."""

    execution_id: str
    run_id: str
    definition: str
    key: str | None = None
    limits: LaneLimits = field(default_factory=LaneLimits)


@dataclass
class LaneTicket:
    """What ``lane_acquire`` did: the lane (workflow id and run) now holds the request."""

    lane: str
    lane_run_id: str | None = None


@dataclass
class LaneRelease:
    """Signal ``release``: the run no longer needs (or waits for) its slot."""

    execution_id: str
    run_id: str


@dataclass
class LaneVerdict:
    """Signal ``lane_verdict`` to an execution: ``granted`` runs it, otherwise it is skipped."""

    granted: bool
    reason: str = ""
    lane: str = ""
    run_id: str = ""
    """The run it answers; another run of the same workflow id ignores it."""


@dataclass
class LaneSlot:
    """A run holding a slot since ``since`` (epoch seconds, workflow time)."""

    execution_id: str
    run_id: str
    since: float


@dataclass
class LaneState:
    """A lane's whole state: its input, its continue-as-new carry-over and its ``lane`` query answer."""

    lane: str
    limits: LaneLimits | None = None
    running: list[LaneSlot] = field(default_factory=list)
    """Oldest first (``cancel_oldest`` cancels the head)."""
    waiting: list[LaneRequest] = field(default_factory=list)
    """FIFO of runs waiting in QUEUED."""
    starts: list[float] = field(default_factory=list)
    """Grant times within the last minute, for ``per_minute``."""
    released: list[str] = field(default_factory=list)
    """Recently released or refused run ids: a late or repeated ``acquire`` from them is ignored."""
    checked_at: float = 0.0
    """When the slot holders were last verified with ``lane_check``."""


@dataclass
class LaneCheck:
    """Input of ``lane_check``: slots to verify."""

    slots: list[LaneSlot]


@dataclass
class LaneCheckResult:
    """Run ids of ``LaneCheck.slots`` that are no longer running."""

    gone: list[str]


def lane_id(definition: str, key: str | None) -> str:
    """Workflow id of the lane of ``definition`` (and ``key``): ``lane/<definition>[/<key>]``."""
    if key is None:
        return f"lane/{definition}"
    if len(key) > MAX_KEY_CHARS:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"lane/{definition}/{key}"


class LaneActivities:
    """Lane activities, with the worker's Temporal client injected."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=names.ACTIVITY_LANE_ACQUIRE)
    async def lane_acquire(self, request: LaneRequest) -> LaneTicket:
        """Signal-with-start the request's lane on this task queue; the lane answers the execution."""
        lane = lane_id(request.definition, request.key)
        handle = await self._client.start_workflow(
            names.LANE_WORKFLOW,
            LaneState(lane=lane),
            id=lane,
            task_queue=activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=names.SIGNAL_LANE_ACQUIRE,
            start_signal_args=[request],
            static_summary=f"admission lane of {request.definition}",
        )
        return LaneTicket(lane=lane, lane_run_id=handle.result_run_id)

    @activity.defn(name=names.ACTIVITY_LANE_CHECK)
    async def lane_check(self, check: LaneCheck) -> LaneCheckResult:
        """The slots whose run has closed (e.g. terminated, so it never sent ``release``)."""
        states = await asyncio.gather(*(self._running(slot) for slot in check.slots))
        return LaneCheckResult(
            gone=[slot.run_id for slot, running in zip(check.slots, states, strict=True) if not running]
        )

    async def _running(self, slot: LaneSlot) -> bool:
        handle = self._client.get_workflow_handle(slot.execution_id, run_id=slot.run_id)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING
