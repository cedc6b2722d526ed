"""Why a running execution cannot progress, in Temporal's words: its workflow task keeps failing.

A workflow task fails when the worker cannot run the interpreter's code to the next command: an exception
that is not a Temporal failure (a bug), a nondeterminism against the recorded history, a workflow that did
not yield in time (the SDK's deadlock detector), a worker that died mid-task. Temporal then retries the task
for as long as the execution lives, and the execution, seen from outside, stays in whatever state it last
recorded, with no error. This module finds such a streak and its reason.

Two sources. For one execution, ``DescribeWorkflowExecution`` tells how many attempts the pending workflow
task is at, and the last ``WorkflowTaskFailed`` / ``WorkflowTaskTimedOut`` event of its history gives the
cause and the failure's message (only the first failure of a streak is recorded: the SDK lets later
attempts time out silently, so that event is also when the streak began). For lists and counts, the server
sets the ``TemporalReportedProblems`` search attribute on a running workflow once its consecutive workflow
task problems reach the dynamic config ``system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute``
(``PROBLEMS_TO_REPORT``, which every Temporal that Conveyor starts or deploys sets) and clears it on the next
successful task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from typing import Final

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError

SA_REPORTED_PROBLEMS: Final = SearchAttributeKey.for_keyword_list("TemporalReportedProblems")
"""Temporal's own search attribute: ``["category=WorkflowTaskFailed", "cause=WorkflowTaskFailedCause…"]``."""

CATEGORIES: Final = ("WorkflowTaskFailed", "WorkflowTaskTimedOut")
"""The problem categories Temporal reports (the names of the history events)."""

PROBLEMS_TO_REPORT_SETTING: Final = "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute"
PROBLEMS_TO_REPORT: Final = 1
"""Consecutive workflow task problems before the server sets ``TemporalReportedProblems``. Temporal's
default is 5 (each silent retry times out after the 10 s workflow task timeout, so about 40 s); at 1 the
list and ``/stats`` agree with an execution's own view from its first failure. A blip clears itself on the
next good task."""

_CATEGORY_VALUES = ", ".join(f"'category={category}'" for category in CATEGORIES)
STUCK_CLAUSE: Final = f"ExecutionStatus = 'Running' AND {SA_REPORTED_PROBLEMS.name} IN ({_CATEGORY_VALUES})"
"""A visibility query clause matching the running workflows whose workflow task keeps failing."""

_HISTORY_PAGE = 100
_HISTORY_SCAN = 1000
"""How many of the newest history events are searched for the failure (signals may follow it)."""


def dynamic_config_flags() -> list[str]:
    """The ``temporal server start-dev`` arguments that make it report stuck workflows."""
    return ["--dynamic-config-value", f"{PROBLEMS_TO_REPORT_SETTING}={PROBLEMS_TO_REPORT}"]


@dataclass(frozen=True)
class Problem:
    """What keeps a running execution from progressing.

    ``category`` and ``cause`` are Temporal's (``WorkflowTaskFailed``,
    ``WorkflowTaskFailedCauseNonDeterministicError``, ...); ``message`` is the failure's own text;
    ``failed_attempts`` counts the workflow task attempts that failed or timed out since the last one that
    succeeded; ``since`` is when the first of them was recorded. A list row knows only the first two.
    """

    category: str
    cause: str | None
    message: str | None = None
    failed_attempts: int | None = None
    since: str | None = None

    def same_as(self, other: Problem | None) -> bool:
        """Whether ``other`` is this problem (whatever the attempts since)."""
        return other is not None and (self.category, self.cause, self.message) == (
            other.category,
            other.cause,
            other.message,
        )


def reported_problem(
    attributes: TypedSearchAttributes, status: WorkflowExecutionStatus | None
) -> Problem | None:
    """The problem a visibility row reports through ``TemporalReportedProblems`` (running workflows only:
    the attribute may outlive a run that was terminated while stuck)."""
    if status != WorkflowExecutionStatus.RUNNING:
        return None
    pairs = dict(item.partition("=")[::2] for item in attributes.get(SA_REPORTED_PROBLEMS) or ())
    category = pairs.get("category")
    if category not in CATEGORIES:
        return None
    return Problem(category=category, cause=pairs.get("cause"))


async def execution_problem(client: Client, description: WorkflowExecutionDescription) -> Problem | None:
    """The problem of the described run, or None when its workflow tasks go through (or it has closed)."""
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    raw = description.raw_description
    attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
    reported = reported_problem(description.typed_search_attributes, description.status)
    # A retry attempt means the ones before it failed; a new event (a signal) restarts the count at 1 but
    # not the server's streak, which the search attribute still reports.
    if attempt <= 1 and reported is None:
        return None
    failures, newest = await _failures_since_last_success(client, description)
    failed_attempts = max(attempt - 1, failures, 1)
    if newest is None:
        # The history shows no failure (already scanned past it): what the pending task says is all there is.
        category = reported.category if reported else CATEGORIES[0]
        cause = reported.cause if reported else None
        return Problem(category, cause, None, failed_attempts, None)
    category, cause, message = await _described(client, newest)
    return Problem(category, cause, message, failed_attempts, newest.event_time.ToDatetime(UTC).isoformat())


async def _failures_since_last_success(
    client: Client, description: WorkflowExecutionDescription
) -> tuple[int, HistoryEvent | None]:
    """How many failure events follow the last completed workflow task, and the newest of them."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=description.id, run_id=description.run_id),
        maximum_page_size=_HISTORY_PAGE,
    )
    failures = 0
    newest: HistoryEvent | None = None
    scanned = 0
    while scanned < _HISTORY_SCAN:
        try:
            page = await client.workflow_service.get_workflow_execution_history_reverse(request)
        except RPCError:
            break  # the problem is known from the description; its reason is a bonus
        for event in page.history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return failures, newest
            if event.event_type in _FAILURE_EVENTS:
                failures += 1
                newest = newest or event
        scanned += len(page.history.events)
        if not page.next_page_token:
            break
        request.next_page_token = page.next_page_token
    return failures, newest


_FAILURE_EVENTS = frozenset(
    {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT}
)


async def _described(client: Client, event: HistoryEvent) -> tuple[str, str, str]:
    """Category, cause and message of a failure event, as Temporal names them."""
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
        timeout = TimeoutType.Name(event.workflow_task_timed_out_event_attributes.timeout_type)
        kind = _camel(timeout.removeprefix("TIMEOUT_TYPE_"))
        return "WorkflowTaskTimedOut", f"WorkflowTaskTimedOutCause{kind}", f"workflow task timed out ({kind})"
    attributes = event.workflow_task_failed_event_attributes
    cause = _camel(WorkflowTaskFailedCause.Name(attributes.cause))
    return "WorkflowTaskFailed", cause, await _message(client, attributes.failure)


async def _message(client: Client, failure: Failure) -> str:
    """A failure's message, with the exception type when it is an application error."""
    # Through the data converter: with payload encryption the message travels encoded.
    try:
        error = await client.data_converter.decode_failure(failure)
    except Exception:  # a codec that cannot decode it (a rotated key): the raw text, not a 500
        return failure.message
    message = error.message if isinstance(error, FailureError) else str(error)
    if isinstance(error, ApplicationError) and error.type and error.type not in message:
        message = f"{error.type}: {message}"
    return message


def _camel(constant: str) -> str:
    """``WORKFLOW_TASK_FAILED_CAUSE_X`` as the search attribute spells it: ``WorkflowTaskFailedCauseX``."""
    return "".join(word.capitalize() for word in re.split(r"_+", constant.lower()) if word)
