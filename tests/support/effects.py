"""A loopback receiver of side effects that carry an idempotency key, and the reliability counts.

It stands in for an external system that dedupes on ``Idempotency-Key`` (as payment and order APIs do):
Conveyor's delivery is at-least-once, so after a worker dies mid-request the same key may arrive again;
the receiver keeps one effect per key and counts the repeats. The suite's "none twice" is then measured as
the number of distinct effects per execution, which must be exactly one per side-effecting step.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

IDEMPOTENCY_HEADER = "Idempotency-Key"


def effect_step(step_id: str, receiver_url: str, *, hold_s: float = 0.0) -> dict[str, object]:
    """An ``http_request`` step that POSTs one effect with ``idempotency_key`` on.

    Its key is ``<execution id>/<step id>/<activity id>``: the same on every retry of the step.
    ``hold_s`` keeps the request open at the receiver, so a kill lands while the activity is running.
    """
    return {
        "id": step_id,
        "type": "http_request",
        "with": {
            "method": "POST",
            "url": f"{receiver_url}/effects",
            "query": {"hold": hold_s},
            "idempotency_key": True,
            "body": {"step": step_id},
        },
    }


@dataclass
class Receiver:
    """The app plus what it has received."""

    app: FastAPI = field(default_factory=FastAPI)
    deliveries: Counter[str] = field(default_factory=Counter)
    """Key -> how many times it arrived."""
    in_flight: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        @self.app.post("/effects")
        async def effect(request: Request, hold: float = 0.0) -> JSONResponse:
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if not key:
                return JSONResponse({"error": "an Idempotency-Key is required"}, status_code=400)
            self.in_flight += 1
            try:
                await asyncio.sleep(hold)
            finally:
                self.in_flight -= 1
            # Recorded after the hold: a request cut off by a kill never took effect, as with a real API
            # that commits at the end of the request.
            first = key not in self.deliveries
            self.deliveries[key] += 1
            return JSONResponse({"key": key, "replayed": not first})

    def runs(self) -> list[tuple[str, str]]:
        """(execution id, step id) of every distinct key: a step twice here ran twice."""
        parsed = []
        for key in self.deliveries:
            execution_id, step_id, _run = key.rsplit("/", 2)
            parsed.append((execution_id, step_id))
        return parsed

    def effects_of(self, execution_id: str) -> set[str]:
        """The distinct step ids that took effect for ``execution_id``."""
        return {step for execution, step in self.runs() if execution == execution_id}

    def effects_of_step(self, step_id: str) -> set[str]:
        """The execution ids for which step ``step_id`` took effect."""
        return {execution for execution, step in self.runs() if step == step_id}

    @property
    def redeliveries(self) -> int:
        """Deliveries of a key that had already taken effect (at-least-once at work)."""
        return sum(self.deliveries.values()) - len(self.deliveries)


REPORTS: list[str] = []
"""Every count line of this run, for the terminal summary (tests/reliability/conftest.py)."""


@dataclass
class Counts:
    """What a reliability test reports: executions started, completed, duplicated and lost."""

    started: int = 0
    completed: int = 0
    duplicated: int = 0
    lost: int = 0
    redelivered: int = 0
    notes: list[str] = field(default_factory=list)

    def report(self, title: str) -> str:
        line = (
            f"[reliability] {title}: started={self.started} completed={self.completed} "
            f"duplicated={self.duplicated} lost={self.lost} redelivered={self.redelivered}"
        )
        print(line)
        for note in self.notes:
            print(f"[reliability]   {note}")
        REPORTS.append(line)
        return line


def tally(receiver: Receiver, execution_ids: list[str], completed: set[str], steps: set[str]) -> Counts:
    """Counts for executions that should each have taken effect once per step in ``steps``.

    Lost: not completed, or a step's effect missing. Duplicated: a step of an execution that took effect
    under two keys (the workflow ran it twice), or an effect of no started execution's steps.
    """
    counts = Counts(started=len(execution_ids), completed=len(completed & set(execution_ids)))
    counts.redelivered = receiver.redeliveries
    known = set(execution_ids)
    for execution_id in execution_ids:
        effects = receiver.effects_of(execution_id)
        if execution_id not in completed or effects != steps:
            counts.lost += 1
            counts.notes.append(f"lost {execution_id}: effects {sorted(effects)}")
    for run, times in Counter(receiver.runs()).items():
        execution_id, step = run
        if execution_id not in known or step not in steps or times > 1:
            counts.duplicated += 1
            counts.notes.append(f"{execution_id} {step}: {times} distinct effects")
    return counts
