"""How much one template render may do, counted rather than timed, and what operations cost.

Renders run on a workflow task's thread, where the Temporal SDK declares the task deadlocked after two seconds
and the execution stalls. Every render therefore spends from a budget of work (loop iterations weighted by the
size of the loop's body, macro bodies, calls, items a filter goes through) and of volume (characters and items
copied or scanned), and every value it makes is checked against a size cap *before* it is allocated. The
counts depend only on the template and its data, so a replay fails at the same point as the first run.

The deadlock detector watches the whole workflow task, not one render: a transform renders its ``map`` once
per item, and a ``foreach`` runs every item's steps up to their first wait in the same task. All the renders
of one task therefore also spend from a :class:`TaskAllowance` of a few renders' worth.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from jinja2.exceptions import SecurityError

MAX_RANGE = 10_000
"""Items in one ``range()``."""
MAX_SEQUENCE = 1_000_000
"""Characters or items in one value a template makes, including the text a template renders to."""
MAX_EXPONENT = 1_000
MAX_INT_BITS = 14_300
"""About 4,300 decimal digits: Python will not turn a longer integer into text anyway."""
MAX_WORK = 200_000
"""Steps of work per render: template nodes run, items a filter goes through in Python. A step takes about a
microsecond at most, so a render that spends all of them still ends in a fraction of a second."""
MAX_VOLUME = 10_000_000
"""Characters and items copied or scanned at C speed per render."""
MAX_SOURCE = 100_000
"""Characters in one template's source: compiling is linear in it and runs on the same thread."""
MAX_TASK_WORK = 4 * MAX_WORK
"""Steps of work all the renders of one workflow task may take together: about a second at most, under the
deadlock detector's two."""
MAX_TASK_VOLUME = 4 * MAX_VOLUME
"""Characters and items all the renders of one workflow task may copy or scan together."""
TEMPLATE_COST = 20
"""Steps of work each template rendered costs besides what it does: setting up its context, converting its
result. Without it a transform over many items could spend its workflow task on renders that each cost
nothing."""

_SIZED = (str, list, tuple, dict)
SMALL = 64
"""Copying or scanning this many characters or items costs less than the step of work that asked for it, so
smaller values are not paid for again: the hot path of ordinary templates stays a length check."""


class TemplateTooCostly(SecurityError):
    """A render would exceed its budget or make a value over the size cap; nothing was allocated for it."""


class TaskAllowance:
    """What the renders of one workflow task may still spend together; see :class:`Budget`."""

    __slots__ = ("task", "volume", "work")

    def __init__(self, task: int) -> None:
        self.task = task
        """Which task it belongs to (its history length): a new task starts a new allowance."""
        self.work = MAX_TASK_WORK
        self.volume = MAX_TASK_VOLUME


class Budget:
    """The work and volume one render may still spend; entered around a top-level render.

    Renders are synchronous, and the SDK runs workflow tasks on several threads, so the budget in force is
    held in a context variable rather than anywhere global. Nested renders share the outer budget. Given the
    workflow task's allowance, a render may spend no more than is left of it, and what it spends is taken
    from it when the render ends.
    """

    __slots__ = ("_started", "_token", "limited", "task", "task_volume", "task_work", "volume", "work")

    def __init__(self, limited: bool = True, task: TaskAllowance | None = None) -> None:
        # Unlimited, a render works as before the bounds existed: for replaying histories recorded then.
        self.limited = limited
        self.work = MAX_WORK if limited else sys.maxsize
        self.volume = MAX_VOLUME if limited else sys.maxsize
        self.task = task if limited else None
        # Whether what is left of the task's allowance, rather than the render's own budget, is the bound.
        self.task_work = self.task_volume = False
        if self.task is not None:
            self.task_work = self.task.work < self.work
            self.task_volume = self.task.volume < self.volume
            self.work = min(self.work, self.task.work)
            self.volume = min(self.volume, self.task.volume)
        self._started = (self.work, self.volume)
        self._token: Any = None

    def __enter__(self) -> Budget:
        if _CURRENT.get() is None:
            self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._token is None:
            return
        _CURRENT.reset(self._token)
        self._token = None
        if self.task is not None:
            work, volume = self._started
            self.task.work -= work - self.work
            self.task.volume -= volume - self.volume


_CURRENT: ContextVar[Budget | None] = ContextVar("conveyor_template_budget", default=None)


class Unbudgeted:
    """No budget in force, for compiling: Jinja's constant folding must leave metered work to the render,
    and compiling happens inside the render that first needs a template."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _CURRENT.set(None)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        _CURRENT.reset(self._token)


def current() -> Budget:
    """The budget of the render in progress.

    Outside one, only Jinja's compile-time constant folding calls in: refusing makes it leave the work to
    render time, where it is counted, instead of doing it unbounded while compiling (or validating).
    """
    budget = _CURRENT.get()
    if budget is None:
        raise TemplateTooCostly("bounded operations run only while rendering")
    return budget


def spend(work: int = 1, volume: int = 0) -> None:
    """Take ``work`` and ``volume`` from the current render's budget, failing it once either runs out."""
    budget = _CURRENT.get() or current()
    budget.work -= work
    budget.volume -= volume
    if budget.work < 0 or budget.volume < 0:
        _exhausted(budget)


def _exhausted(budget: Budget) -> None:
    if budget.work < 0 and budget.task_work:
        raise TemplateTooCostly(
            f"the templates rendered in this workflow task took more than {MAX_TASK_WORK:,} steps of work "
            f"together ({TEMPLATE_COST} per template besides what it does); process this many items in a "
            "custom_code step, not in templates"
        )
    if budget.work < 0:
        raise TemplateTooCostly(
            f"more than {MAX_WORK:,} steps of work (loop iterations times the loop's size, calls, items "
            "filtered); do heavy processing in a step, not in a template"
        )
    if budget.task_volume:
        raise TemplateTooCostly(
            f"the templates rendered in this workflow task together copied or scanned more than "
            f"{MAX_TASK_VOLUME:,} characters or items"
        )
    raise TemplateTooCostly(f"more than {MAX_VOLUME:,} characters or items copied or scanned")


def will_make(size: int) -> None:
    """Check and pay for a value of ``size`` characters or items before making it."""
    fits(size)
    spend(volume=size)


def fits(size: int) -> None:
    """Refuse a value (a list growing in place) that would pass the size cap; its growth is paid elsewhere."""
    if size > MAX_SEQUENCE and (_CURRENT.get() or current()).limited:
        raise TemplateTooCostly(f"a value of {size:,} characters or items, more than {MAX_SEQUENCE:,}")


def limited() -> bool:
    """Whether the render in progress is bounded (see :class:`Budget`)."""
    return (_CURRENT.get() or current()).limited


def refusing() -> bool:
    """Whether what no bounded render may do is refused here: in a bounded render, or validating."""
    budget = _CURRENT.get()
    return budget is None or budget.limited


def made(value: Any) -> Any:
    """Check and pay for a value just made (by an operation that cannot make more than its inputs' size)."""
    if isinstance(value, _SIZED) and len(value) > SMALL:
        will_make(len(value))
    return value


def scanned(value: Any) -> Any:
    """Pay for a pass over ``value`` at C speed (membership, comparison, a string method)."""
    if isinstance(value, _SIZED) and len(value) > SMALL:
        spend(volume=len(value))
    return value


def processed(value: Any) -> None:
    """Pay for a pass over ``value`` at Python speed: one step of work per item, or volume for text."""
    if isinstance(value, str):
        if len(value) > SMALL:
            spend(volume=len(value))
    elif isinstance(value, _SIZED):
        spend(work=len(value))


def counted(items: Iterable[Any], weight: int) -> Iterator[Any]:
    """``items``, paying ``weight`` for each as a loop takes it."""
    budget = current()
    for item in items:
        budget.work -= weight
        if budget.work < 0:
            _exhausted(budget)
        yield item


def size_of_int(value: int) -> None:
    """Refuse an integer too long to compute with or print cheaply."""
    bits = value.bit_length()
    if bits > MAX_INT_BITS:
        raise TemplateTooCostly(f"a number of {bits:,} bits, more than {MAX_INT_BITS:,}")
    spend(volume=bits // 8)


def is_sized(value: Any) -> bool:
    """Whether ``value`` is data whose size is known without going through it."""
    return isinstance(value, _SIZED)
