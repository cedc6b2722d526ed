"""``LaneWorkflow``: admission for the executions of one definition (and one key of it).

A definition with ``limits.max_concurrent`` or ``limits.per_minute`` runs each execution through its lane
between QUEUED and PROCESSING. The lane holds the running set, a FIFO of waiting executions and the grant
times of the last minute; it answers each ``acquire`` with a ``lane_verdict`` signal, or with a Temporal
cancellation for ``cancel_new`` / ``cancel_oldest``, and frees a slot on ``release``. Nothing polls: the
lane sleeps on a condition, with a durable timer only when it has a reason to wake (the oldest start
leaving the rate window, a slot to verify, or being idle long enough to exit).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.lanes import (
        LaneCheck,
        LaneCheckResult,
        LaneLimits,
        LaneRelease,
        LaneRequest,
        LaneSlot,
        LaneState,
        LaneVerdict,
    )
    from core import names

WINDOW = 60.0
"""Seconds of the ``per_minute`` window."""

IDLE = timedelta(minutes=10)
"""A lane with nothing running or waiting for this long exits; the next ``acquire`` starts it again."""

CHECK_AFTER = 60.0
"""Seconds a slot is held before the lane verifies its holder, and only while someone is blocked."""

CONTINUE_AFTER = 250
"""Signals handled before the lane continues as new with its state."""

KEEP_RELEASED = 500
"""Released run ids remembered, to ignore a late or repeated ``acquire``."""


@dataclass
class _Answer:
    """What the lane tells one execution."""

    kind: str  # grant | skip | cancel
    execution_id: str
    run_id: str
    reason: str


@workflow.defn(name=names.LANE_WORKFLOW)
class LaneWorkflow:
    """The admission lane ``lane/<definition>[/<key>]``."""

    @workflow.init
    def __init__(self, state: LaneState) -> None:
        self._state = state
        self._inbox: list[LaneRequest | LaneRelease] = []
        self._handled = 0
        self._again = False

    @workflow.signal(name=names.SIGNAL_LANE_ACQUIRE)
    def acquire(self, request: LaneRequest) -> None:
        """An execution asks for a slot."""
        self._inbox.append(request)

    @workflow.signal(name=names.SIGNAL_LANE_RELEASE)
    def release(self, release: LaneRelease) -> None:
        """An execution ended or stopped waiting (idempotent)."""
        self._inbox.append(release)

    @workflow.query(name=names.QUERY_LANE)
    def describe(self) -> LaneState:
        """Limits, running set, queue and recent starts."""
        return self._state

    @workflow.run
    async def run(self, state: LaneState) -> LaneState:
        """Admit executions until idle for ``IDLE``; continue as new every ``CONTINUE_AFTER`` signals."""
        while True:
            timed_out = False
            try:
                await workflow.wait_condition(lambda: bool(self._inbox) or self._again, timeout=self._wake())
            except TimeoutError:
                timed_out = True
            self._again = False
            now = workflow.now().timestamp()
            if self._check_due(now):
                await self._check(now)
            inbox, self._inbox = self._inbox, []
            answers: list[_Answer] = []
            for message in inbox:
                self._handled += 1
                if isinstance(message, LaneRelease):
                    self._drop(message.run_id)
                else:
                    self._arrive(message, now, answers)
            self._serve(now, answers)
            await self._answer(answers)
            idle = not self._state.running and not self._state.waiting
            if timed_out and idle and not inbox and not self._inbox:
                return self._state
            if (
                self._handled >= CONTINUE_AFTER or workflow.info().is_continue_as_new_suggested()
            ) and not self._inbox:
                await workflow.wait_condition(workflow.all_handlers_finished)
                del self._state.released[:-KEEP_RELEASED]
                workflow.continue_as_new(self._state)

    # -- decisions ---------------------------------------------------------------------------------------

    def _arrive(self, request: LaneRequest, now: float, answers: list[_Answer]) -> None:
        state = self._state
        run = request.run_id
        if (
            run in state.released
            or any(s.run_id == run for s in state.running)
            or any(w.run_id == run for w in state.waiting)
        ):
            return  # a retried acquire, or one that arrived after its execution gave up
        state.limits = request.limits
        if not state.waiting and self._can_start(now):
            self._grant(request, now, answers)
            return
        limits = request.limits
        reason = f"limit reached ({self._limit_text()})"
        if limits.on_limit in {"cancel_new", "skip"}:
            state.released.append(run)
            kind = "cancel" if limits.on_limit == "cancel_new" else "skip"
            answers.append(_Answer(kind, request.execution_id, run, reason))
            return
        if limits.on_limit == "cancel_oldest" and self._full() and state.running:
            oldest = state.running.pop(0)
            state.released.append(oldest.run_id)
            answers.append(
                _Answer(
                    "cancel", oldest.execution_id, oldest.run_id, f"{reason}: cancelled for a newer execution"
                )
            )
            if not state.waiting and self._can_start(now):
                self._grant(request, now, answers)
                return
        state.waiting.append(request)

    def _serve(self, now: float, answers: list[_Answer]) -> None:
        while self._state.waiting and self._can_start(now):
            self._grant(self._state.waiting.pop(0), now, answers)

    def _grant(self, request: LaneRequest, now: float, answers: list[_Answer]) -> None:
        self._state.running.append(
            LaneSlot(execution_id=request.execution_id, run_id=request.run_id, since=now)
        )
        if request.limits.per_minute is not None:
            self._state.starts.append(now)
        answers.append(_Answer("grant", request.execution_id, request.run_id, "slot granted"))

    def _drop(self, run_id: str) -> None:
        state = self._state
        state.running = [s for s in state.running if s.run_id != run_id]
        state.waiting = [w for w in state.waiting if w.run_id != run_id]
        if run_id not in state.released:
            state.released.append(run_id)

    def _limits(self) -> LaneLimits:
        return self._state.limits or LaneLimits()

    def _full(self) -> bool:
        most = self._limits().max_concurrent
        return most is not None and len(self._state.running) >= most

    def _rate_blocked(self, now: float) -> bool:
        per_minute = self._limits().per_minute
        self._state.starts = [t for t in self._state.starts if t > now - WINDOW]
        return per_minute is not None and len(self._state.starts) >= per_minute

    def _can_start(self, now: float) -> bool:
        return not self._full() and not self._rate_blocked(now)

    def _limit_text(self) -> str:
        limits = self._limits()
        parts = [f"max_concurrent {limits.max_concurrent}"] if limits.max_concurrent is not None else []
        if limits.per_minute is not None:
            parts.append(f"per_minute {limits.per_minute}")
        return ", ".join(parts) + f" in {self._state.lane}"

    # -- waking ------------------------------------------------------------------------------------------

    def _wake(self) -> timedelta | None:
        """How long to sleep when no signal comes: None (until one does) unless a timer has a purpose."""
        state = self._state
        now = workflow.now().timestamp()
        if not state.running and not state.waiting:
            return IDLE
        if not state.waiting:
            return None
        if not self._full():  # only the rate holds the queue: wake when the oldest start leaves the window
            return timedelta(seconds=max(state.starts[0] + WINDOW - now, 0.001)) if state.starts else None
        due = max(state.checked_at, min(s.since for s in state.running)) + CHECK_AFTER
        return timedelta(seconds=max(due - now, 0.001))

    def _check_due(self, now: float) -> bool:
        """Someone is blocked by a full lane whose holders have not been verified for ``CHECK_AFTER``."""
        blocked = bool(self._state.waiting) or any(isinstance(m, LaneRequest) for m in self._inbox)
        return (
            blocked
            and self._full()
            and now >= self._state.checked_at + CHECK_AFTER
            and any(s.since <= now - CHECK_AFTER for s in self._state.running)
        )

    async def _check(self, now: float) -> None:
        """Free the slots of holders that closed without ``release`` (terminated, reset away)."""
        self._state.checked_at = now
        stale = [s for s in self._state.running if s.since <= now - CHECK_AFTER]
        try:
            result = await workflow.execute_activity(
                names.ACTIVITY_LANE_CHECK,
                LaneCheck(slots=stale),
                result_type=LaneCheckResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="verify slot holders",
            )
        except ActivityError:
            workflow.logger.warning("could not verify slot holders", extra={"lane": self._state.lane})
            return
        for run_id in result.gone:
            workflow.logger.info(
                "freed the slot of a closed run", extra={"lane": self._state.lane, "run": run_id}
            )
            self._drop(run_id)

    # -- answers -----------------------------------------------------------------------------------------

    async def _answer(self, answers: list[_Answer]) -> None:
        delivered = await asyncio.gather(*(self._send(answer) for answer in answers))
        for answer, ok in zip(answers, delivered, strict=True):
            if answer.kind == "grant" and not ok:
                self._drop(answer.run_id)  # granted to a run that has closed meanwhile
                self._again = True

    async def _send(self, answer: _Answer) -> bool:
        try:
            if answer.kind == "cancel":
                # Only the run that asked (or holds the slot) is cancelled, never a later run of the same id.
                run = workflow.get_external_workflow_handle(answer.execution_id, run_id=answer.run_id)
                await run.cancel(reason=answer.reason)
            else:
                # Addressed by workflow id only, as the time-skipping test server loses run-addressed signals;
                # the verdict names its run and any other run ignores it.
                verdict = LaneVerdict(
                    granted=answer.kind == "grant",
                    reason=answer.reason,
                    lane=self._state.lane,
                    run_id=answer.run_id,
                )
                await workflow.get_external_workflow_handle(answer.execution_id).signal(
                    names.SIGNAL_LANE_VERDICT, verdict
                )
        except FailureError:
            return False
        return True
