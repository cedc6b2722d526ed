"""Waiting in tests for what another task or process does: poll, with a bound, never a timing assertion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

BOUND_S = 60.0
"""Generous: two cores shared with everything else the suite runs."""


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, within_s: float = BOUND_S) -> T:
    """Poll ``check`` (real time: a time-skipping clock stays put) until it answers something."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (found := await check()) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened within {within_s:g}s: {what}")
        await asyncio.sleep(0.1)
    return found


async def until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = BOUND_S) -> None:
    """Poll ``check`` until it is true."""

    async def holds() -> bool | None:
        return True if await check() else None

    await eventually(holds, what, within_s)
