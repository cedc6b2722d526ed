"""The plan of a long ``foreach``'s child workflows: bounded fan-out at any length, parallelism shared out."""

from __future__ import annotations

import pytest

from workflows.fanout import FANOUT, FanOut, plan

EVENTS_PER_CHILD = 10
"""A child in its parent's history: initiated, started, closed, and the parent's workflow tasks around them
(3 each, at most two per child: one to start it, one when it ends)."""

EVENTS_PER_ITEM = 6
"""A one-activity loop body per item at worst: scheduled, started, completed and a workflow task of 3."""

OVERHEAD = 30
"""A workflow's own start, first and last tasks, search attributes and markers."""


def tree(items: int, batch: int, parallelism: int) -> list[tuple[int, FanOut | None]]:
    """Every workflow a loop runs in, as (its items, its plan; None for a batch run in its own history)."""
    found: list[tuple[int, FanOut | None]] = []
    level = [(items, parallelism)]
    while level:
        below: list[tuple[int, int]] = []
        for count, share in level:
            if count <= batch:
                found.append((count, None))
                continue
            fan = plan(count, batch, share)
            found.append((count, fan))
            slots = list(fan.slots)
            below += [
                (end - start, slots[i % len(slots)]) for i, (start, end) in enumerate(fan.slices(count))
            ]
        level = below
    return found


def events(count: int, fan: FanOut | None) -> int:
    return OVERHEAD + (fan.count * EVENTS_PER_CHILD if fan else count * EVENTS_PER_ITEM)


def test_parallelism_100_over_batches_of_100_runs_four_children_of_25() -> None:
    fan = plan(10_000, 100, 100)
    assert (fan.size, fan.count, fan.slots) == (100, 100, (25, 25, 25, 25))
    assert fan.slices(10_000)[-1] == (9_900, 10_000)


def test_a_hundred_thousand_items_go_to_ten_parts_of_a_hundred_batches() -> None:
    top = plan(100_000, 100, 100)
    assert (top.size, top.count, top.slots) == (10_000, 10, (100,))
    assert plan(10_000, 100, 100).count == 100


@pytest.mark.parametrize("batch", [1, 7, 100, 1000])
@pytest.mark.parametrize("parallelism", [1, 3, 100, 1000])
def test_a_million_items_keep_every_history_under_10000_events(batch: int, parallelism: int) -> None:
    workflows = tree(1_000_000, batch, parallelism)
    assert sum(count for count, fan in workflows if fan is None) == 1_000_000
    assert max(fan.count for _, fan in workflows if fan is not None) <= FANOUT
    assert max(events(count, fan) for count, fan in workflows) < 10_000
    if batch == 100:  # the default: the execution, 100 parts, 10,000 batches
        assert len(workflows) == 1 + 100 + 10_000


@pytest.mark.parametrize("items", [2, 101, 250, 10_001, 1_000_000])
@pytest.mark.parametrize("batch", [1, 2, 100, 1000])
@pytest.mark.parametrize("parallelism", [1, 2, 7, 30, 101, 1000])
def test_slots_share_out_exactly_the_parallelism(items: int, batch: int, parallelism: int) -> None:
    if items <= batch:
        return
    fan = plan(items, batch, parallelism)
    assert sum(fan.slots) == parallelism
    assert min(fan.slots) >= 1
    assert len(fan.slots) <= fan.count <= FANOUT
    slices = fan.slices(items)
    assert len(slices) == fan.count
    assert [s for s, _ in slices] == list(range(0, items, fan.size))
    assert slices[-1][1] == items
