"""Resealing: every secret the store keeps is opened, and moved to the active key when sealed under another.

The API runs :func:`reseal` at start (``python -m core.db`` after the migrations, too). Opening every value
checks the keys before anything is served: a value sealed under a key this process lacks, or under another
key with the same id, stops the start with the rows at fault named. A value sealed under an older key is
sealed again under the active one, so after a rotation the old key can be removed once the start reports
nothing left under it. Each row is rewritten only if it still holds what was read, so a concurrent change
(an API replica replacing the connector) is never overwritten; that writer sealed it under its own key.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import connectors, triggers
from core.models import Connector, Trigger
from core.sealing import KeyConfigInvalid, SealedValueUnreadable, Sealer, key_id_of


@dataclass
class Resealed:
    """What :func:`reseal` found and did."""

    active_key_id: str
    found: Counter[str] = field(default_factory=Counter)
    """Sealed values by the key id they were under before."""
    moved: int = 0
    """Values sealed again under the active key."""

    def summary(self) -> str:
        """One line for the log, e.g. ``3 sealed secret(s) (k1: 2, k2: 1); 2 resealed; all under k2 now``."""
        total = sum(self.found.values())
        keys = ", ".join(f"{key_id}: {count}" for key_id, count in sorted(self.found.items()))
        left = total - self.found[self.active_key_id] - self.moved
        tail = (
            f"all under the active key {self.active_key_id} now"
            if not left
            else f"{left} changed meanwhile and stay under their key until the next start"
        )
        return f"{total} sealed secret(s){f' ({keys})' if keys else ''}; {self.moved} resealed; {tail}"


async def reseal(sessions: async_sessionmaker[AsyncSession], sealer: Sealer) -> Resealed:
    """Open every sealed connector configuration and webhook secret, and move those under other keys to the
    active one; :class:`KeyConfigInvalid` names every value that does not open (then nothing is rewritten)."""
    done = Resealed(sealer.active_key_id)
    problems: list[str] = []
    async with sessions() as session:
        for name, token in (await session.exec(select(Connector.name, Connector.sealed_config))).all():
            fresh = _under_active(sealer, token, connectors.sealing_context(name), done, problems)
            if fresh != token:
                moved = await session.exec(
                    update(Connector)
                    .where(col(Connector.name) == name, col(Connector.sealed_config) == token)
                    .values(sealed_config=fresh)
                )
                done.moved += moved.rowcount
        # The JSON column compared as text: PostgreSQL's json type has no equality, and the text is as stored.
        stored = cast(col(Trigger.secrets), Text)
        for trigger_id, text in (await session.exec(select(Trigger.id, stored))).all():
            entries: list[dict[str, Any]] = json.loads(text)
            context = triggers.sealing_context(trigger_id)
            values = [str(entry.get("value", "")) for entry in entries]
            fresh_values = [_under_active(sealer, value, context, done, problems) for value in values]
            changed = sum(1 for new, old in zip(fresh_values, values, strict=True) if new != old)
            if changed:
                fresh_entries = [
                    {**entry, "value": value} for entry, value in zip(entries, fresh_values, strict=True)
                ]
                moved = await session.exec(
                    update(Trigger)
                    .where(col(Trigger.id) == trigger_id, stored == text)
                    .values(secrets=fresh_entries)
                )
                done.moved += changed * moved.rowcount
        if problems:
            await session.rollback()
            raise KeyConfigInvalid(
                f"{len(problems)} secret(s) in the store do not open with CONVEYOR_SECRET_KEYS__*: "
                + "; ".join(problems)
                + ". Give this process the keys they were sealed with (CONVEYOR_SECRET_KEYS__<ID>); a "
                "value whose key is lost cannot be recovered: delete its connector or trigger row and create "
                "it again."
            )
        await session.commit()
    return done


def _under_active(sealer: Sealer, token: str, context: str, done: Resealed, problems: list[str]) -> str:
    """``token`` under the active key: itself when it is, or does not open (noted in ``problems``), else
    its value sealed again."""
    done.found[key_id_of(token) or "not sealed"] += 1
    try:
        plain = sealer.open(token, context=context)
    except SealedValueUnreadable as exc:
        problems.append(exc.message)
        return token
    return token if sealer.is_current(token) else sealer.seal(plain, context=context)
