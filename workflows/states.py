"""Execution states and the one table of transitions between them.

The interpreter moves through these states only by :func:`check_transition`, so an illegal move is a bug
that fails loudly instead of a record that lies.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionState(StrEnum):
    """Where an execution is in its life; also the search attribute ``ConveyorState``."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"
    SUSPENDED = "SUSPENDED"
    CANCELLED = "CANCELLED"


S = ExecutionState

TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    S.CREATED: frozenset({S.QUEUED}),
    S.QUEUED: frozenset({S.PROCESSING, S.CANCELLED}),
    # PROCESSING -> SUSPENDED is an operator's `suspend`, taking effect at the next step boundary.
    S.PROCESSING: frozenset({S.COMPLETED, S.FAILED, S.WAITING, S.CANCELLED, S.SUSPENDED}),
    S.WAITING: frozenset({S.PROCESSING, S.CANCELLED}),
    S.FAILED: frozenset({S.RETRYING, S.SUSPENDED}),
    S.RETRYING: frozenset({S.QUEUED}),
    S.SUSPENDED: frozenset({S.QUEUED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}

FINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
"""States an execution can close in (FAILED is final unless it is retried or suspended)."""


class IllegalTransition(Exception):
    """A move the table does not allow."""

    def __init__(self, current: ExecutionState, target: ExecutionState) -> None:
        super().__init__(f"illegal state transition {current} -> {target}")
        self.current = current
        self.target = target


def check_transition(current: ExecutionState, target: ExecutionState) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
