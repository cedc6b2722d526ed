"""The list operations of ``transform`` and the rules of ``validate``: pure functions over JSON data."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

MISSING = object()


def get_path(value: Any, path: str) -> Any:
    """``value`` at a dotted ``path`` (``a.b.0.c``), or :data:`MISSING`."""
    current = value
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (
            isinstance(current, list)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return MISSING
    return current


def map_fields(item: Any, rules: dict[str, str]) -> dict[str, Any]:
    """A new object whose keys are the rule targets and values the item's fields at the rule sources."""
    mapped: dict[str, Any] = {}
    for target, source in rules.items():
        found = get_path(item, source)
        mapped[target] = None if found is MISSING else found
    return mapped


# -- normalize ---------------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value
    plain = str(value).strip()
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", plain):
        number = float(plain)
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", plain) else number
    text = re.sub(r"[^\d,.\-]", "", str(value))
    if "," in text and "." in text:  # 1.234,56 or 1,234.56: the last separator is the decimal one
        text = (
            text.replace(",", "")
            if text.rfind(".") > text.rfind(",")
            else text.replace(".", "").replace(",", ".")
        )
    elif "," in text:
        text = text.replace(",", ".") if len(text.rsplit(",", 1)[1]) != 3 else text.replace(",", "")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    return int(number) if number.is_integer() and "." not in text else number


_DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%d %B %Y",
    "%B %d, %Y",
    "%d %b %Y",
)


def _date(value: Any) -> Any:
    if value is None:
        return None
    text = str(value).strip()
    try:
        return (
            datetime.fromisoformat(text).date().isoformat()
            if len(text) <= 10
            else datetime.fromisoformat(text).isoformat()
        )
    except ValueError:
        pass
    for layout in _DATE_FORMATS:
        try:
            return datetime.strptime(text, layout).date().isoformat()
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a date this step can read")


def _boolean(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "y", "1", "on"}:
        return True
    if text in {"false", "no", "n", "0", "off", ""}:
        return False
    raise ValueError(f"{value!r} is not a yes/no value")


NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "trim": lambda v: v.strip() if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "title": lambda v: v.title() if isinstance(v, str) else v,
    "collapse_spaces": lambda v: re.sub(r"\s+", " ", v).strip() if isinstance(v, str) else v,
    "number": _number,
    "integer": lambda v: None if v is None else round(float(_number(v))),
    "date": _date,
    "boolean": _boolean,
    "string": lambda v: None if v is None else str(v),
}


def normalize(item: Any, rules: dict[str, list[str]]) -> Any:
    """``item`` with each named field passed through its normalizers, in order."""
    if not isinstance(item, dict):
        return item
    result = dict(item)
    for field, operations in rules.items():
        if field in result:
            value = result[field]
            for operation in operations:
                value = NORMALIZERS[operation](value)
            result[field] = value
    return result


# -- aggregate ---------------------------------------------------------------------------------------------

AGGREGATES = ("sum", "count", "avg", "min", "max")


def aggregate(items: list[Any], group_by: list[str], metrics: dict[str, dict[str, Any]]) -> Any:
    """Metrics per group (a list of ``{<group keys>, <metrics>}``), or one object without ``group_by``."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for item in items:
        key = tuple(_hashable(get_path(item, field)) for field in group_by)
        groups.setdefault(key, []).append(item)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {
            field: (None if value is MISSING else value) for field, value in zip(group_by, key, strict=True)
        }
        for name, spec in metrics.items():
            [(function, field)] = spec.items()
            row[name] = _metric(function, members, field)
        rows.append(row)
    if not group_by:
        return (
            rows[0] if rows else {name: _metric(next(iter(spec)), [], "") for name, spec in metrics.items()}
        )
    return rows


def _hashable(value: Any) -> Any:
    return (
        value
        if isinstance(value, str | int | float | bool) or value is None or value is MISSING
        else repr(value)
    )


def _metric(function: str, members: list[Any], field: Any) -> Any:
    if function == "count":
        if field is True or field in (None, "", "*"):
            return len(members)
        return sum(1 for m in members if get_path(m, str(field)) not in (MISSING, None))
    values = [
        v
        for m in members
        if isinstance(v := get_path(m, str(field)), int | float) and not isinstance(v, bool)
    ]
    if function == "sum":
        return sum(values)
    if not values:
        return None
    if function == "avg":
        return sum(values) / len(values)
    return min(values) if function == "min" else max(values)


# -- validate ----------------------------------------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def check_rule(item: Any, rule: dict[str, Any]) -> str | None:
    """Why ``item`` breaks ``rule``, or None when it keeps it."""
    kind = rule["rule"]
    field = rule.get("field")
    value = get_path(item, field) if field else item
    label = field or "the item"
    if kind == "required":
        return None if value is not MISSING and value not in (None, "") else f"{label} is required"
    if value is MISSING or value is None:
        return None  # only `required` complains about absent values
    if kind == "type":
        return None if _JSON_TYPES[rule["type"]](value) else f"{label} must be of type {rule['type']}"
    if kind in ("min", "max"):
        bound = rule["value"]
        measured = len(value) if isinstance(value, str | list) else value
        if not isinstance(measured, int | float) or isinstance(measured, bool):
            return f"{label} must be a number to compare with {kind} {bound}"
        if kind == "min" and measured < bound:
            return f"{label} must be at least {bound}"
        if kind == "max" and measured > bound:
            return f"{label} must be at most {bound}"
        return None
    if kind == "pattern":
        return None if re.search(rule["pattern"], str(value)) else f"{label} must match {rule['pattern']}"
    if kind == "one_of":
        return None if value in rule["values"] else f"{label} must be one of {rule['values']}"
    if kind == "json_schema":
        errors = sorted(Draft202012Validator(rule["schema"]).iter_errors(value), key=lambda e: list(e.path))
        return "; ".join(e.message for e in errors[:5]) or None
    raise ValueError(f"unknown rule {kind}")


def validate_items(items: Any, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """``{valid, invalid, errors}``: the items that keep every rule, the others with their reasons."""
    many = isinstance(items, list)
    valid: list[Any] = []
    invalid: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items if many else [items]):
        reasons = []
        for rule in rules:
            reason = check_rule(item, rule)
            if reason is not None:
                message = rule.get("message") or reason
                reasons.append(message)
                errors.append(
                    {"index": index, "field": rule.get("field"), "rule": rule["rule"], "message": message}
                )
        if reasons:
            invalid.append({"index": index, "item": item, "errors": reasons})
        else:
            valid.append(item)
    return {
        "valid": valid,
        "invalid": invalid,
        "errors": errors,
        "valid_count": len(valid),
        "invalid_count": len(invalid),
    }
