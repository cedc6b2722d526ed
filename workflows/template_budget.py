"""How much one template render may do, counted rather than timed, and what operations cost.

Renders run on a workflow task's thread, where the Temporal SDK declares the task deadlocked after two seconds
and the execution stalls. Every render therefore spends from a budget of work (loop iterations weighted by the
size of the loop's body, macro bodies, calls, items a filter goes through) and of volume (characters and items
copied or scanned), and every value it makes is checked against a size cap *before* it is allocated. The
counts depend only on the template and its data, so a replay fails at the same point as the first run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
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

_SIZED = (str, list, tuple, dict)
SMALL = 64
"""Copying or scanning this many characters or items costs less than the step of work that asked for it, so
smaller values are not paid for again: the hot path of ordinary templates stays a length check."""


class TemplateTooCostly(SecurityError):
    """A render would exceed its budget or make a value over the size cap; nothing was allocated for it."""


class Budget:
    """The work and volume one render may still spend; entered around a top-level render.

    Renders are synchronous, and the SDK runs workflow tasks on several threads, so the budget in force is
    held in a context variable rather than anywhere global. Nested renders share the outer budget.
    """

    __slots__ = ("_token", "limited", "volume", "work")

    def __init__(self, limited: bool = True) -> None:
        # Unlimited, a render works as before the bounds existed: for replaying histories recorded then.
        self.limited = limited
        self.work = MAX_WORK if limited else sys.maxsize
        self.volume = MAX_VOLUME if limited else sys.maxsize
        self._token: Any = None

    def __enter__(self) -> Budget:
        if _CURRENT.get() is None:
            self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


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
    if budget.work < 0:
        raise TemplateTooCostly(
            f"more than {MAX_WORK:,} steps of work (loop iterations times the loop's size, calls, items "
            "filtered); do heavy processing in a step, not in a template"
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


def joined(separator: str, items: Iterable[Any], strict: bool = False) -> list[Any]:
    """``items`` as text for ``separator.join``, refusing before the joined text would pass the cap.

    Items that are not text yet are made text one at a time, so that a list holding one huge value many
    times fails at the first copies, not after all of them. ``strict`` leaves them as they are, for
    ``str.join`` to refuse as it always does.
    """
    items = list(items)
    if set(map(type, items)) <= {str}:
        # Only references so far: the sizes are summed before anything is copied.
        will_make(sum(map(len, items)) + len(separator) * max(len(items) - 1, 0))
        return items
    if strict:
        return items  # str.join refuses them before making anything
    parts: list[str] = []
    total = 0
    for item in items:
        part = str(item)
        total += len(part) + len(separator)
        if total > MAX_SEQUENCE + len(separator):
            will_make(total)
        parts.append(part)
    will_make(max(total - len(separator), 0))
    return parts


def replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    """Length of ``text.replace(old, new, count)``, found without making it."""
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


# A %-conversion: mapping key, flags, width, precision, length modifier, type ('%%' is a literal '%').
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.?)", re.DOTALL)
_SPEC_NUMBER = re.compile(r"\d+")


def printf_size(template: str, values: Any) -> int:
    """At most how long ``template % values`` can be, found before any of it is made."""
    size = len(template)
    for key, width, precision, kind in _PRINTF.findall(template):
        if kind == "%":
            continue
        if "*" in (width, precision) and limited():
            raise TemplateTooCostly("'*' widths in %-formatting are not supported in templates")
        size += int(width if width.isdigit() else 0) + int(precision if precision.isdigit() else 0)
        # A mapping's value is made text once per conversion that names it.
        if key and isinstance(values, Mapping):
            size += _length(values.get(key))
    if not isinstance(values, Mapping):
        size += sum(_length(v) for v in (values if isinstance(values, tuple) else (values,)))
    return size


def _length(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


def format_spec_size(spec: str) -> int:
    """Characters the widths and precisions in a ``str.format`` spec can add."""
    return sum(int(number) for number in _SPEC_NUMBER.findall(spec))
