"""Whether anything listens for execution events, so executions publish them only then."""

from __future__ import annotations

import time
from fnmatch import fnmatchcase

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import store_key
from core.models import StoredAutomation, Trigger

LIFECYCLE_EVENTS = ("execution.completed", "execution.failed")
"""Events the interpreter publishes itself, when some event trigger or automation rule listens for them."""

_LISTENING_TTL_S = 1.0
_listening: dict[str, tuple[float, bool]] = {}
"""Per store (a test run uses several)."""


async def anyone_listens_to_executions(session: AsyncSession) -> bool:
    """Whether some active event trigger or automation rule waits for execution events (cached for a
    second)."""
    store = store_key(session)
    expires, answer = _listening.get(store, (0.0, False))
    if expires > time.monotonic():
        return answer
    query = select(Trigger).where(col(Trigger.type) == "event", col(Trigger.paused).is_(False))
    patterns = [str(t.config.get("event", "")) for t in (await session.exec(query)).all()]
    answer = any(fnmatchcase(name, p) for p in patterns for name in LIFECYCLE_EVENTS)
    if not answer:  # automation rules listen too
        rules = select(StoredAutomation.id).where(
            col(StoredAutomation.active).is_(True), col(StoredAutomation.event).in_(LIFECYCLE_EVENTS)
        )
        answer = (await session.exec(rules.limit(1))).first() is not None
    _listening[store] = (time.monotonic() + _LISTENING_TTL_S, answer)
    return answer
