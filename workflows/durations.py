"""Durations as definitions write them: ``30s``, ``5m``, ``1h30m``, ``500ms``, ``7d``, or plain seconds."""

from __future__ import annotations

import math
import re

MAX_SECONDS = 10 * 365 * 86400.0
"""The longest duration a definition may hold: ten years. Longer ones are typos, and from about 2.7
million years on they do not even fit a ``timedelta``, so a timer or timeout built from one would fail the
workflow task instead of the step."""

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ``ValueError`` with a readable reason when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '30s', '5m', '1h30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip().lower()):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value.strip().lower()))
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m', '1h30m', '500ms' or seconds")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Short text for ``seconds`` (used in graphs and messages)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
