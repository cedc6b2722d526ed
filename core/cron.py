"""The cron expressions schedule triggers take: classic five-field cron that Temporal reads as classic cron.

Temporal's schedules also take six and seven fields (a year last, seconds first), ``@every``, macros,
``CRON_TZ=`` and comments, and read a day of month together with a day of week as "both" where classic cron
reads "either". Each of those fires at other times than a reader of the expression expects (``0 */5 * * * *``,
meant as every five seconds, fires every five hours), so they are refused rather than passed on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    """Names of the values from ``low`` on (``jan`` is 1, ``sun`` is 0)."""

    def value(self, text: str) -> int:
        if text in self.names:
            return self.names.index(text) + self.low
        if not text.isdigit() or not self.low <= int(text) <= self.high:
            raise ValueError(f"cron {self.name}: {text!r} is not in {self.low}-{self.high}")
        return int(text)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)
_ITEM = re.compile(r"(?:\*|(?P<low>[a-z0-9]+)(?:-(?P<high>[a-z0-9]+))?)(?:/(?P<step>[0-9]+))?")


def check_five_fields(cron: str) -> None:
    """Raise ``ValueError`` saying what is wrong unless ``cron`` is five fields of values or names, ``*``,
    ranges ``a-b``, lists ``a,b`` and steps ``*/n`` / ``a-b/n``, restricting at most one of the day fields."""
    if cron.strip().startswith("@"):
        raise ValueError(
            "cron takes five fields, not @every or macros such as @daily: use 'interval' (e.g. '5m') for a "
            "fixed period, or five fields (e.g. '0 0 * * *' for daily)"
        )
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(
            "cron has five fields (minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'; this one "
            f"has {len(fields)} (seconds, years, time zones and comments are not taken)"
        )
    for text, field in zip(fields, _FIELDS, strict=True):
        for item in text.lower().split(","):
            _check_item(item, field)
    if fields[2] != "*" and fields[4] != "*":
        raise ValueError(
            "cron restricts both the day of month and the day of week: Temporal fires only on days that "
            "match both, classic cron on days that match either; restrict one of them (or use two triggers)"
        )


def _check_item(item: str, field: _Field) -> None:
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ValueError(
            f"cron {field.name}: {item!r} is not *, a value, a range (a-b) or a step (*/n, a-b/n)"
        )
    low, high, step = match["low"], match["high"], match["step"]
    if high is not None and field.value(high) < field.value(low):
        raise ValueError(f"cron {field.name}: the range {item!r} runs backwards")
    if low is not None:
        field.value(low)
    if step is not None:
        if low is not None and high is None:
            raise ValueError(f"cron {field.name}: a step follows * or a range (*/n, a-b/n), not {item!r}")
        if int(step) == 0:
            raise ValueError(f"cron {field.name}: a step of 0 never advances")
