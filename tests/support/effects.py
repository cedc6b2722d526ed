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
    """An ``http_request`` step that POSTs one effect keyed by execution id and step id.

    ``hold_s`` keeps the request open at the receiver, so a kill lands while the activity is running.
    """
    return {
        "id": step_id,
        "type": "http_request",
        "with": {
            "method": "POST",
            "url": f"{receiver_url}/effects",
            "query": {"hold": hold_s},
            "headers": {IDEMPOTENCY_HEADER: f"{{{{ execution.id }}}}:{step_id}"},
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

    def effects_of(self, execution_id: str) -> set[str]:
        """The distinct step ids that took effect for ``execution_id``."""
        prefix = f"{execution_id}:"
        return {key.removeprefix(prefix) for key in self.deliveries if key.startswith(prefix)}

    def effects_of_step(self, step_id: str) -> set[str]:
        """The execution ids for which step ``step_id`` took effect."""
        suffix = f":{step_id}"
        return {key.removesuffix(suffix) for key in self.deliveries if key.endswith(suffix)}

    @property
    def redeliveries(self) -> int:
        """Deliveries of a key that had already taken effect (at-least-once at work)."""
        return sum(self.deliveries.values()) - len(self.deliveries)


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
        return line


def tally(receiver: Receiver, execution_ids: list[str], completed: set[str], steps: set[str]) -> Counts:
    """Counts for executions that should each have taken effect once per step in ``steps``.

    Lost: not completed, or a step's effect missing. Duplicated: an effect that is not one per step of a
    started execution (a second run under another execution id, or an unknown key).
    """
    counts = Counts(started=len(execution_ids), completed=len(completed & set(execution_ids)))
    counts.redelivered = receiver.redeliveries
    known = set(execution_ids)
    for execution_id in execution_ids:
        effects = receiver.effects_of(execution_id)
        if execution_id not in completed or effects != steps:
            counts.lost += 1
            counts.notes.append(f"lost {execution_id}: effects {sorted(effects)}")
    for key in receiver.deliveries:
        execution_id, _, step = key.rpartition(":")
        if execution_id not in known or step not in steps:
            counts.duplicated += 1
            counts.notes.append(f"unexpected effect {key}")
    return counts
