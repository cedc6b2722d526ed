"""Which of a task queue's pollers are live workers.

Temporal lists every poller it saw in the last five minutes, so a worker that died stays in the list (and in
Conveyor's worker counts) for minutes. A live worker with a free slot is always in a long poll, and starts a
new one at least once per the server's long-poll interval (one minute by default), which refreshes its
``last_access_time``: a poller not seen for longer than that, plus a margin, is gone. A worker whose every
slot is busy does not poll either, so while all its slots are taken by long work it is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from temporalio.api.taskqueue.v1 import PollerInfo


def live_pollers(pollers: Iterable[PollerInfo], *, within_s: float, now: datetime | None = None) -> int:
    """How many of ``pollers`` polled within the last ``within_s`` seconds (by this host's clock)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=within_s)
    return sum(1 for poller in pollers if poller.last_access_time.ToDatetime(UTC) >= cutoff)
