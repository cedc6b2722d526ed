"""How a ``foreach`` too long for one history is spread over child workflows: a pure plan.

A loop over more than ``batch_size`` items runs as child workflows. Each child gets a contiguous slice: a
batch of ``batch_size`` items, which it runs in its own history, or, when one workflow would have to start
more than ``FANOUT`` batches, a *part* of ``batch_size * FANOUT**k`` items, which it splits the same way.
So every workflow of the tree starts at most ``FANOUT`` children per loop and its history stays bounded
whatever the length of the list: at 1,000,000 items in batches of 100 the execution starts 100 parts of
10,000 items and each part 100 batches.

The ``parallelism`` items in flight are shared out over *slots*: each slot runs one child at a time, with
its share as that child's parallelism, and starts the next child as soon as its child ends. A child gets
at most a quarter of its items in flight (``ROUNDS``), so it runs them in several waves and a slot spends
little of its time in the tail of a child, where only its last items are running.
"""

from __future__ import annotations

from dataclasses import dataclass

FANOUT = 100
"""Most children one workflow starts for one loop (about 9 history events each)."""

ROUNDS = 4
"""A child of ``n`` items runs at most ``n // ROUNDS`` of them at once (unless ``parallelism`` is lower)."""


@dataclass(frozen=True)
class FanOut:
    """The children of one loop: ``count`` slices of ``size`` items (the last may hold fewer), run by
    ``len(slots)`` slots, ``slots[i]`` items in flight in slot ``i``'s child."""

    size: int
    count: int
    slots: tuple[int, ...]

    def slices(self, items: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each child's items among ``items``."""
        return [(start, min(start + self.size, items)) for start in range(0, items, self.size)]


def plan(items: int, batch: int, parallelism: int) -> FanOut:
    """The children for a loop of ``items`` (more than ``batch``), at most ``parallelism`` in flight."""
    size = batch
    while -(-items // size) > FANOUT:
        size *= FANOUT
    count = -(-items // size)
    share = max(1, min(parallelism, size // ROUNDS))
    width = max(1, min(count, parallelism // share))
    # The remainder goes to the first slots, so the slots add up to exactly ``parallelism``.
    slots = tuple(parallelism // width + (1 if i < parallelism % width else 0) for i in range(width))
    return FanOut(size=size, count=count, slots=slots)
