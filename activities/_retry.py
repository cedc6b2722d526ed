"""Jittered exponential backoff for transient failures.

Temporal's RetryPolicy backs off exponentially but without jitter, so many executions failing against the
same supplier at once would all come back at once. Activities raise transient errors with
``next_retry_delay`` set from the step's policy and a random factor instead.
"""

from __future__ import annotations

import random
from datetime import timedelta

from temporalio import activity

from workflows.messages import StepRequest


def jittered_delay(request: StepRequest) -> timedelta | None:
    """The wait before the next attempt: the policy's exponential delay times a factor in [0.5, 1.0)."""
    policy = request.retry
    if not policy:
        return None
    attempt = activity.info().attempt
    ceiling = policy.get("max_interval", 60.0)
    base = min(ceiling, policy.get("initial_interval", 1.0) * policy.get("backoff", 2.0) ** (attempt - 1))
    return timedelta(seconds=base * random.uniform(0.5, 1.0))
