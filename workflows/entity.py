"""``EntityWorkflow``: one long-lived workflow per entity (``entity/<type>/<id>``).

The entity's state lives here. Transitions are the ``transition`` update: its validator checks the state
machine, the caller's permission and the guard, and a rejection leaves nothing in history. An accepted
transition is recorded (actor, notes, context, time), updates the search attributes lists filter on, moves
SLA tracking, and queues a domain event for the automation activity. An SLA target is a durable timer
(``_arm``): when it fires before tracking stops, the breach is recorded and ``sla.breached`` emitted.
The workflow ends once its entity is in a terminal state and everything queued has been handed on, and
continues as new after ``continue_after`` transitions and timers, carrying its whole state.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core import names
    from workflows.entity_messages import (
        EntityEvent,
        EntityRecord,
        EntityStart,
        EntityView,
        SlaRecordWrite,
        TransitionRecord,
        TransitionRequest,
        TransitionResult,
    )
    from workflows.lifecycles import Actor, Lifecycle, SlaRule, check_transition, load_lifecycle

_ACTIVITY_TIMEOUT = timedelta(seconds=60)
_ACTIVITY_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=10)


def entity_search_attributes(entity: EntityRecord) -> list[SearchAttributeUpdate[str]]:
    """The search attributes of an entity's current state and indexed fields (unset ones removed)."""
    updates: list[SearchAttributeUpdate[str]] = [
        names.SA_ENTITY_TYPE.value_set(entity.type),
        names.SA_STATE.value_set(entity.state),
    ]
    for key, name in (
        (names.SA_TASK_TYPE, "task_type"),
        (names.SA_PRIORITY, "priority"),
        (names.SA_ASSIGNEE, "assigned_to"),
    ):
        value = entity.data.get(name)
        updates.append(key.value_set(str(value)) if value not in (None, "") else key.value_unset())
    return updates


@workflow.defn(name=names.ENTITY_WORKFLOW)
class EntityWorkflow:
    """One entity and its lifecycle."""

    @workflow.init
    def __init__(self, start: EntityStart) -> None:
        self._lifecycle: Lifecycle = load_lifecycle(start.lifecycle)
        self._entity = start.entity
        self._sla = start.sla
        self._transitions = start.transitions
        self._records = list(start.records)
        self._events = list(start.events)
        self._handled = 0
        self._by_request = {t.request_id: t for t in start.transitions if t.request_id is not None}
        self._alarm_at: float | None = None
        """Deadline of the earliest SLA timer still running (epoch seconds)."""
        self._alarms: set[asyncio.Task[None]] = set()
        self._rang = False

    @workflow.query(name=names.QUERY_ENTITY)
    def describe(self) -> EntityView:
        """The entity, its transitions and its SLA tracking."""
        return EntityView(
            entity=self._entity,
            transitions=self._transitions,
            sla=self._sla,
            terminal=self._entity.state in self._lifecycle.terminal,
        )

    @workflow.update(name=names.UPDATE_TRANSITION)
    def transition(self, request: TransitionRequest) -> TransitionResult:
        """Move the entity; the validator has already accepted the move."""
        if request.request_id is not None and request.request_id in self._by_request:
            return TransitionResult(self._entity, self._by_request[request.request_id], repeated=True)
        now = workflow.now()
        self._check_breach()
        entity = self._entity
        record = TransitionRecord(
            seq=entity.seq + 1,
            from_state=entity.state,
            to_state=request.target_state,
            actor=request.actor,
            role=request.role,
            at=now.isoformat(),
            notes=request.notes,
            context=request.context,
            request_id=request.request_id,
        )
        entity.state = request.target_state
        entity.seq = record.seq
        entity.updated_at = record.at
        self._transitions.append(record)
        if record.request_id is not None:
            self._by_request[record.request_id] = record
        self._handled += 1
        workflow.upsert_search_attributes([names.SA_STATE.value_set(entity.state)])
        self._track(record.from_state, record.to_state)
        self._events.append(
            self._event(
                "entity.transitioned",
                f"{workflow.info().workflow_id}:t{record.seq}",
                from_state=record.from_state,
                to_state=record.to_state,
                actor=record.actor,
            )
        )
        return TransitionResult(entity, record)

    @transition.validator
    def _validate(self, request: TransitionRequest) -> None:
        # Raising here rejects the update before anything reaches history; the API reads type and details.
        if request.request_id is not None and request.request_id in self._by_request:
            return
        rejection = check_transition(
            self._lifecycle,
            state=self._entity.state,
            target=request.target_state,
            entity={**self._entity.data, "created_by": self._entity.created_by, "state": self._entity.state},
            actor=Actor(request.actor, request.role, tuple(request.permissions)),
            context=request.context,
        )
        if rejection is not None:
            raise ApplicationError(
                rejection.message, rejection.details, type=rejection.code, non_retryable=True
            )

    @workflow.run
    async def run(self, start: EntityStart) -> EntityView:
        """Serve transitions and the SLA timer until the entity is final and its side effects handed on."""
        # Commands come only from here, in one order: side effects, then the SLA timer. A transition that
        # arrives in the same activation as the workflow's start (its first task had no commands, so a worker
        # that evicted it receives both at once) runs before this loop does; the same history replayed later
        # delivers them apart. Issuing the timer at the top of the loop made those two runs disagree.
        while True:
            await workflow.wait_condition(self._work_waiting)
            if self._rang:
                self._rang = False
                self._handled += 1
            self._check_breach()
            await self._hand_on()
            self._arm()
            if self._entity.state in self._lifecycle.terminal and not self._sla.tracking:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (self._records or self._events):
                    return self.describe()
            elif self._handled >= start.continue_after or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (self._records or self._events):
                    workflow.continue_as_new(
                        EntityStart(
                            entity=self._entity,
                            lifecycle=start.lifecycle,
                            sla=self._sla,
                            transitions=self._transitions,
                            continue_after=start.continue_after,
                        )
                    )

    # -- SLA ---------------------------------------------------------------------------------------------

    def _rule(self) -> SlaRule | None:
        raw = self._sla.rule
        if raw is None:
            return None
        return SlaRule(
            target_minutes=float(raw["target_minutes"]),
            task_type=raw.get("task_type"),
            start_on=tuple(raw.get("start_on", ())),
            stop_on=tuple(raw.get("stop_on", ())),
            pause_on=tuple(raw.get("pause_on", ())),
            id=str(raw.get("id", "")),
        )

    def _elapsed(self) -> float:
        sla = self._sla
        running = workflow.now().timestamp() - sla.running_since if sla.running_since is not None else 0.0
        return sla.accumulated_s + running

    def _breach_due(self) -> float | None:
        """When the running SLA would be breached (epoch seconds), or None when no clock runs."""
        rule = self._rule()
        sla = self._sla
        if rule is None or not sla.tracking or sla.breached or sla.running_since is None:
            return None
        return workflow.now().timestamp() + rule.target_minutes * 60 - self._elapsed()

    def _work_waiting(self) -> bool:
        return bool(self._records or self._events) or self._rang or self._timer_needed()

    def _timer_needed(self) -> bool:
        due = self._breach_due()
        return due is not None and (self._alarm_at is None or self._alarm_at > due)

    def _arm(self) -> None:
        """Start a durable timer for the SLA deadline, unless one rings at or before it already.

        Timers are never cancelled: one that is no longer needed (the entity completed, or a pause moved
        the deadline) rings into a check that finds nothing due, or vanishes with the workflow. Cancelling
        a timer in the same activation as an update proved fragile under load (a timer started and
        cancelled within one activation leaves no trace in history, and a replay then numbers the next
        timer differently), and ringing late costs only a workflow task.
        """
        if not self._timer_needed():
            return
        due = self._breach_due()
        assert due is not None
        self._alarm_at = due
        alarm = asyncio.create_task(self._ring(due))
        self._alarms.add(alarm)
        alarm.add_done_callback(self._alarms.discard)

    async def _ring(self, due: float) -> None:
        await workflow.sleep(timedelta(seconds=max(due - workflow.now().timestamp(), 0.001)))
        if self._alarm_at == due:
            self._alarm_at = None
        self._rang = True

    def _check_breach(self) -> None:
        rule = self._rule()
        sla = self._sla
        if rule is None or not sla.tracking or sla.breached or self._elapsed() < rule.target_minutes * 60:
            return
        sla.breached = True
        now = workflow.now().isoformat()
        self._records.append(self._sla_record(rule, breached_at=now))
        self._handled += 1
        self._events.append(
            self._event(
                "sla.breached",
                f"{workflow.info().workflow_id}:sla{sla.period}",
                sla={"target_minutes": rule.target_minutes, "period": sla.period, "rule": rule.id},
            )
        )

    def _track(self, from_state: str, to_state: str) -> None:
        """Start, pause, resume or stop SLA tracking for a move ``from_state`` → ``to_state``."""
        rule = self._rule()
        if rule is None:
            return
        sla = self._sla
        now = workflow.now()
        if not sla.tracking:
            if to_state in rule.start_on:
                sla.period += 1
                sla.tracking = True
                sla.started_at = now.isoformat()
                sla.running_since = now.timestamp()
                sla.accumulated_s = 0.0
                sla.breached = False
                self._records.append(self._sla_record(rule))
            return
        # A terminal state ends tracking even if the rule forgot it: nothing could stop it later.
        if to_state in rule.stop_on or to_state in self._lifecycle.terminal:
            elapsed = self._elapsed()
            sla.tracking = False
            sla.accumulated_s = elapsed
            sla.running_since = None
            self._records.append(
                self._sla_record(
                    rule,
                    completed_at=now.isoformat(),
                    actual_minutes=round(elapsed / 60, 3),
                    breached=sla.breached or elapsed > rule.target_minutes * 60,
                )
            )
        elif to_state in rule.pause_on:
            if sla.running_since is not None:
                sla.accumulated_s = self._elapsed()
                sla.running_since = None
        elif sla.running_since is None:
            sla.running_since = now.timestamp()

    def _sla_record(
        self,
        rule: SlaRule,
        *,
        completed_at: str | None = None,
        actual_minutes: float | None = None,
        breached: bool | None = None,
        breached_at: str | None = None,
    ) -> SlaRecordWrite:
        entity, sla = self._entity, self._sla
        task_type = entity.data.get("task_type")
        return SlaRecordWrite(
            id=f"{workflow.info().workflow_id}#{sla.period}",
            entity_type=entity.type,
            entity_id=entity.id,
            task_type=str(task_type) if task_type is not None else None,
            sla_config_id=sla.config_id,
            target_minutes=rule.target_minutes,
            started_at=sla.started_at or workflow.now().isoformat(),
            completed_at=completed_at,
            actual_minutes=actual_minutes,
            breached=sla.breached if breached is None else breached,
            breached_at=breached_at,
        )

    # -- side effects ------------------------------------------------------------------------------------

    def _event(self, name: str, event_id: str, **fields: object) -> EntityEvent:
        entity = self._entity
        return EntityEvent(
            event=name,
            event_id=event_id,
            entity_type=entity.type,
            entity_id=entity.id,
            entity={**entity.data, "state": entity.state, "created_by": entity.created_by},
            at=workflow.now().isoformat(),
            automations=[_rule_document(rule) for rule in self._lifecycle.automations if rule.event == name],
            **fields,  # type: ignore[arg-type]
        )

    async def _hand_on(self) -> None:
        """Write queued SLA records, then dispatch queued events, in order; a failure is logged, not fatal."""
        while self._records:
            record = self._records[0]
            try:
                await workflow.execute_activity(
                    names.ACTIVITY_ENTITY_SLA,
                    record,
                    start_to_close_timeout=_ACTIVITY_TIMEOUT,
                    retry_policy=_ACTIVITY_RETRY,
                    summary=f"SLA record {record.id}",
                )
            except ActivityError as exc:
                workflow.logger.warning("could not write SLA record %s: %s", record.id, exc.cause)
            self._records.pop(0)
        while self._events and not self._records:
            event = self._events[0]
            try:
                await workflow.execute_activity(
                    names.ACTIVITY_ENTITY_EVENT,
                    event,
                    start_to_close_timeout=_ACTIVITY_TIMEOUT,
                    retry_policy=_ACTIVITY_RETRY,
                    summary=event.event,
                )
            except ActivityError as exc:
                workflow.logger.warning("automations of %s failed: %s", event.event_id, exc.cause)
            self._events.pop(0)


def _rule_document(rule: object) -> dict[str, object]:
    document = asdict(rule)  # type: ignore[call-overload]
    document["actions"] = [dict(a) for a in document["actions"]]
    return dict(document)
