"""How big a value a template operation would make or go through, found before it does.

Most sizes are plain arithmetic (a padding width, a replacement count). Data is harder: a template holds the
same list many times by reference at no cost (``[L] * 300``), and ``str()``, ``json.dumps``, a comparison or
a JSON copy of it go through every place it appears. :func:`text_size` and :func:`compared` walk such data
once per distinct part (remembered by ``id`` within the walk) while adding up its size as if expanded, which
is what those operations would produce, and refuse as soon as the sum passes the limit. The walk pays for
itself: a step of work per item it goes through in Python, volume per item it checks at C speed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Set
from typing import Any

from jinja2.utils import Namespace

from workflows import template_budget as budget
from workflows.template_budget import MAX_SEQUENCE, TemplateTooCostly

_NUMBERS = frozenset({int, float, bool, type(None)})
SCALARS = _NUMBERS | {str}
"""Types a value can be without holding anything else."""
_INTEGERS = frozenset({int, bool})
_OPEN = 5
"""What a container found inside itself counts: ``str()`` writes it as ``[...]``."""
_ITEMS: type = type({}.items())
_COLLECTIONS: tuple[type, ...] = (Set, type({}.values()))
"""Sets (made by ``-`` on dict views) and dict views, written as their items."""


class _Walk:
    """One pass over a value, adding up its expanded size; refuses past ``limit``."""

    __slots__ = ("heights", "limit", "open", "refuse", "sizes")

    def __init__(self, limit: int, refuse: Callable[[int], TemplateTooCostly]) -> None:
        self.limit = limit
        self.refuse = refuse
        self.sizes: dict[int, int] = {}
        self.heights: dict[int, int] = {}
        """How deep each container nests (1 for one of scalars), by id like ``sizes``."""
        self.open: set[int] = set()

    def size(self, value: Any) -> int:
        kind = type(value)
        if kind is str:
            return len(value) + 2
        if kind in _NUMBERS:
            return _scalar_size(value)
        if kind is list or kind is tuple or isinstance(value, _COLLECTIONS):
            return self._container(value, value, pairs=kind is _ITEMS)
        if kind is dict:
            return self._container(value, value.items(), pairs=True)
        if isinstance(value, Namespace):
            # Its repr is `<Namespace {...}>`, holding everything set on it.
            attributes: dict[str, Any] = object.__getattribute__(value, "_Namespace__attrs")
            return 12 + self.size(attributes)
        if isinstance(value, str):  # Markup
            return len(value) + 2
        return 0  # anything else a template can reach writes itself in a few characters

    def _container(self, value: Collection[Any], items: Iterable[Any], pairs: bool) -> int:
        key = id(value)
        known = self.sizes.get(key)
        if known is not None:
            return known
        if key in self.open:
            return _OPEN
        size = _flat_size(value)
        height = 1
        if size is None:
            budget.spend(work=len(value))
            self.open.add(key)
            size = 2
            for item in items:
                for part in item if pairs else (item,):  # a key and its value
                    size += 2 + self.size(part)
                    height = max(height, 1 + self.heights.get(id(part), 0))
                if size > self.limit:
                    raise self.refuse(size)
            self.open.discard(key)
        if size > self.limit:
            raise self.refuse(size)
        self.sizes[key] = size
        self.heights[key] = height
        return size


def _flat_size(value: Collection[Any]) -> int | None:
    """The size of a list, tuple or dict of scalars, found at C speed, or None when it holds more."""
    if isinstance(value, dict):
        keys, values = set(map(type, value)), set(map(type, value.values()))
        if keys != {str} or not values <= SCALARS:
            return None
        budget.spend(volume=2 * len(value))
        return 2 + 6 * len(value) + sum(map(len, value)) + _scalars_size(value.values(), values)
    if not isinstance(value, list | tuple):
        return None
    types = set(map(type, value))
    if not types <= SCALARS:
        return None
    budget.spend(volume=len(value))
    return 2 + 2 * len(value) + _scalars_size(value, types)


def _scalars_size(values: Collection[Any], types: set[type]) -> int:
    if types == {str}:
        return sum(map(len, values)) + 2 * len(values)
    if types <= _INTEGERS:
        # Decimal digits are at least 3/10 of the bits.
        return sum(map(int.bit_length, values)) * 3 // 10 + len(values)
    budget.spend(work=len(values))
    return sum(len(v) + 2 if type(v) is str else _scalar_size(v) for v in values)


def _scalar_size(value: Any) -> int:
    if type(value) is int:
        return value.bit_length() * 3 // 10 + 1
    return len(repr(value))  # a float, True, None: a few characters, exactly


def text_size(value: Any, limit: int = MAX_SEQUENCE) -> int:
    """At least how many characters ``str(value)`` (or its JSON) would make, refused past ``limit``.

    Escapes can make the text several times longer than counted here; it is checked again once made, so the
    estimate only has to keep anything far over the cap from being made at all.
    """
    kind = type(value)
    if kind is str:
        return len(value)
    if kind in _NUMBERS:
        return _scalar_size(value)
    return _Walk(limit, _too_much_text).size(value)


def _too_much_text(size: int) -> TemplateTooCostly:
    return TemplateTooCostly(
        f"a value of more than {MAX_SEQUENCE:,} characters as text (a list held several times counts "
        f"every time: {size:,} so far)"
    )


def pretty_size(value: Any, indent: int = 1) -> int:
    """At most how many characters ``value`` takes written one item a line, indented ``indent`` characters
    a level (``pprint``, ``tojson(indent=...)``): every character may start a line, indented to the deepest
    level."""
    walk = _Walk(MAX_SEQUENCE, _too_much_text)
    size = walk.size(value)
    return size * (1 + walk.heights.get(id(value), 0) * max(indent, 0))


def check_text(value: Any) -> None:
    """Refuse, before ``str(value)`` runs, a value whose text would pass the size cap."""
    if type(value) in SCALARS or not budget.limited():
        return
    text_size(value)


def compared(value: Any) -> Any:
    """Pay for going through ``value`` in depth at C speed: a comparison, a hash, a membership test."""
    kind = type(value)
    if kind in _NUMBERS:
        return value
    if kind is str:
        return budget.scanned(value)
    current = budget.current()
    if not current.limited:
        return budget.scanned(value)
    size = _Walk(current.volume, _too_much_scanning).size(value)
    budget.spend(volume=size)
    return value


def _too_much_scanning(size: int) -> TemplateTooCostly:
    return TemplateTooCostly(
        f"more than {budget.MAX_VOLUME:,} characters or items compared or scanned (a list held several times "
        f"counts every time: {size:,} so far)"
    )


def joined(separator: str, items: Iterable[Any], strict: bool = False) -> list[Any]:
    """``items`` as text for ``separator.join``, refusing before the joined text would pass the cap.

    Items that are not text yet are measured, then made text, one at a time, so that a list holding one huge
    value many times fails before its first copy. ``strict`` leaves them as they are, for ``str.join`` to
    refuse as it always does.
    """
    items = list(items)
    if set(map(type, items)) <= {str}:
        # Only references so far: the sizes are summed before anything is copied.
        budget.will_make(sum(map(len, items)) + len(separator) * max(len(items) - 1, 0))
        return items
    if strict:
        return items  # str.join refuses them before making anything
    bounded = budget.limited()
    parts: list[str] = []
    total = 0
    for item in items:
        if bounded and type(item) not in SCALARS:
            text_size(item, MAX_SEQUENCE - total)
        part = str(item)
        total += len(part) + len(separator)
        if total > MAX_SEQUENCE + len(separator):
            budget.will_make(total)
        parts.append(part)
    budget.will_make(max(total - len(separator), 0))
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
_HUGE = 10**18
"""Stands for a width written with too many digits to convert (Python refuses over 4,300): over any cap."""


def printf_size(template: str, values: Any) -> int:
    """At least how long ``template % values`` can be, found before any of it is made."""
    size = len(template)
    for key, width, precision, kind in _PRINTF.findall(template):
        if kind == "%":
            continue
        if "*" in (width, precision) and budget.refusing():
            raise TemplateTooCostly("'*' widths in %-formatting are not supported in templates")
        size += _number(width) + _number(precision)
        # A mapping's value is made text once per conversion that names it.
        if key and isinstance(values, Mapping):
            size += _length(values.get(key))
    if not isinstance(values, Mapping):
        size += sum(_length(v) for v in (values if isinstance(values, tuple) else (values,)))
    return size


def _length(value: Any) -> int:
    if type(value) in SCALARS:
        return len(value) if type(value) is str else 0
    if budget.limited():
        return text_size(value)
    return len(value) if budget.is_sized(value) else 0


def format_spec_size(spec: str) -> int:
    """Characters the widths and precisions in a ``str.format`` spec can add."""
    return sum(map(_number, _SPEC_NUMBER.findall(spec)))


def _number(digits: str) -> int:
    if not digits.isdigit():
        return 0
    return int(digits) if len(digits) < 18 else _HUGE


def range_length(start: int, stop: int | None = None, step: int = 1) -> int:
    """Items in ``range(start, stop, step)``, for any size of integers (``len()`` overflows past 2**63)."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("range() arg 3 must not be zero")
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)
