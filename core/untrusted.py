"""Reading untrusted JSON and YAML: strict, bounded, and off the event loop.

Everything a client sends is read here before any work is done with it. What is refused, and why:

- **Lone UTF-16 surrogates** (``"\\ud800"``): Python keeps them in a ``str``, but no UTF-8 encoder (the
  store, the API's own answers) can write them, so they would fail *after* the work is done.
- **Non-finite numbers** (``NaN``, ``Infinity``, ``1e400``): not JSON (RFC 8259); ``json.loads`` accepts them
  and everything downstream changes them silently (``NaN`` → ``null``, ``Infinity`` passes ``minimum: 0``).
- **Depth** past :data:`MAX_DEPTH`: recursive code (validators, templates, the parsers themselves) breaks
  on it.
- **YAML expansion** past :data:`MAX_NODES`: a few hundred bytes of nested aliases ("billion laughs") stand
  for billions of nodes. The YAML event stream is measured, aliases counted at their expanded size, before
  a single object is built.

A problem names where it is, as a JSON path (``$.input.name``), so the 400 tells the caller which field.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

import yaml

from core.errors import BadRequest
from workflows.definition import json_path

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted anywhere (a definition nests steps ~3 levels a block)."""
MAX_NODES = 200_000
"""Most values a YAML document may stand for, aliases counted at their expanded size."""
MAX_CHARS = 4_000_000
"""Most characters of scalar text a YAML document may stand for, aliases counted at their expanded size."""
PARSE_BUDGET_S = 5.0
"""Longest a parse may take off the event loop before the request is refused."""
INLINE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop: a thread hop costs more than the parse."""

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Parse = TypeVar("_Parse")


class InputRefused(BadRequest):
    """Input that cannot be read safely; ``details.path`` says where, when it is one place."""


class _NonFinite:
    """Stands in the parsed value for a number JSON cannot hold, so the walk can say where it was."""

    def __init__(self, text: str) -> None:
        self.text = text


def _non_finite_constant(text: str) -> _NonFinite:
    return _NonFinite(text)


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def parse_json(raw: bytes | str, *, what: str = "the body") -> Any:
    """``raw`` as JSON data, or :class:`InputRefused` naming the first bad place."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        # Also refuses surrogates written as raw (CESU-8) bytes, which json.loads would let through.
        raise InputRefused(
            "INVALID_JSON", f"{what} is not UTF-8 (byte {exc.start})", {"position": exc.start}
        ) from None
    try:
        value = json.loads(text, parse_constant=_non_finite_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep(what, "$") from None
    except ValueError as exc:
        # JSONDecodeError and int() refusing more than 4,300 digits
        raise InputRefused("INVALID_JSON", f"{what} is not valid JSON: {exc}") from None
    # Only an escape can make a surrogate once the text is valid UTF-8.
    check_value(value, what=what, strings="\\u" in text)
    return value


def parse_yaml(raw: bytes | str, *, what: str = "the body") -> Any:
    """``raw`` as YAML data that JSON can hold, or :class:`InputRefused`."""
    try:
        _measure_yaml(raw)
        value = yaml.load(raw, Loader=_Loader)  # a safe loader (C or Python), chosen above
    except RecursionError:
        raise _too_deep(what, "$") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise InputRefused("INVALID_YAML", f"{what} is not valid YAML{line}") from None
    # YAML knows dates, sets, bytes and more that JSON does not; what is stored and run is plain JSON.
    try:
        text = json.dumps(value, default=_jsonable)
    except ValueError as exc:  # a circular document: an alias inside the node it names
        raise InputRefused("INVALID_YAML", f"{what} refers to itself: {exc}") from None
    return parse_json(text, what=what)


def _jsonable(value: object) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise InputRefused("INVALID_DOCUMENT", f"the document holds a {type(value).__name__}, which JSON cannot")


def _measure_yaml(raw: bytes | str) -> None:
    """Refuse a document too deep or standing for too much, from its events alone.

    Every value counts one node and its text's length in characters; an alias counts all that its anchor
    named: that is what constructing the document (and writing it as JSON) would build, and what anything
    walking the result would visit. Characters matter as much as nodes: a thousand aliases of one long
    string are a few bytes to send and gigabytes to write out.
    """
    open_nodes: list[tuple[int, int, str | None]] = []  # (nodes, characters when it opened, its anchor)
    sizes: dict[str, tuple[int, int]] = {}
    nodes = chars = 0
    for event in yaml.parse(raw, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((nodes, chars, event.anchor))
            nodes += 1
            if len(open_nodes) > MAX_DEPTH:
                raise _too_deep("the document", "$")
        elif isinstance(event, yaml.CollectionEndEvent):
            opened, opened_chars, anchor = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = (nodes - opened, chars - opened_chars)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            chars += len(event.value)
            if event.anchor is not None:
                sizes[event.anchor] = (1, len(event.value))
        elif isinstance(event, yaml.AliasEvent):
            more_nodes, more_chars = sizes.get(event.anchor or "", (1, 0))
            nodes += more_nodes
            chars += more_chars
        if nodes > MAX_NODES or chars > MAX_CHARS:
            raise InputRefused(
                "INPUT_TOO_LARGE",
                f"the document stands for more than {MAX_NODES:,} values or {MAX_CHARS:,} characters "
                "(an alias counts at full size)",
            )


def check_value(value: Any, *, what: str = "the body", strings: bool = True) -> None:
    """Refuse nesting past :data:`MAX_DEPTH`, non-finite numbers and (when ``strings``) lone surrogates.

    Iterative, so the depth it refuses never reaches Python's recursion limit; shared nodes (YAML aliases)
    are visited once per place they appear, which the expansion bound has already paid for.
    """
    if _sound(value, MAX_DEPTH, strings):
        return
    # Something is wrong: walk again, keeping paths this time, to say where.
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if len(path) >= MAX_DEPTH:
                raise _too_deep(what, json_path(path))
            for key, child in node.items():
                if strings and not _encodable(key):
                    raise _bad_string(what, json_path((*path, _printable(key))), "a key")
                stack.append((child, (*path, key)))
        elif isinstance(node, list):
            if len(path) >= MAX_DEPTH:
                raise _too_deep(what, json_path(path))
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
        elif isinstance(node, str):
            if strings and not _encodable(node):
                raise _bad_string(what, json_path(path), "a string")
        elif isinstance(node, _NonFinite) or (isinstance(node, float) and not math.isfinite(node)):
            text = node.text if isinstance(node, _NonFinite) else repr(node)
            where = json_path(path)
            raise InputRefused(
                "INVALID_NUMBER",
                f"{what} holds {text} at {where}: JSON numbers are finite (no NaN, Infinity or overflow)",
                {"path": where},
            )


async def off_the_loop(parse: Callable[[bytes], _Parse], raw: bytes) -> _Parse:
    """``parse(raw)``, in a thread when ``raw`` is large, refused past :data:`PARSE_BUDGET_S`.

    The bounds above keep every parse short; the budget is the backstop that keeps a request from holding a
    worker thread's caller (and its client) for long whatever slipped past them.
    """
    if len(raw) <= INLINE_BYTES:
        return parse(raw)
    try:
        return await asyncio.wait_for(asyncio.to_thread(parse, raw), PARSE_BUDGET_S)
    except TimeoutError:
        raise InputRefused(
            "INPUT_TOO_COMPLEX", f"the body took longer than {PARSE_BUDGET_S:g}s to read"
        ) from None


def _sound(node: Any, room: int, strings: bool) -> bool:
    """The quick pass of :func:`check_value`: no paths, recursion bounded by ``room``."""
    if isinstance(node, dict):
        if room == 0:
            return False
        if strings and not all(_encodable(key) for key in node):
            return False
        values: Any = node.values()
    elif isinstance(node, list):
        if room == 0:
            return False
        values = node
    elif isinstance(node, str):
        return not strings or _encodable(node)
    elif isinstance(node, float):
        return math.isfinite(node)
    else:
        return not isinstance(node, _NonFinite)
    for child in values:
        kind = type(child)
        if kind is int or kind is bool or child is None:
            continue
        if kind is str and not strings:
            continue
        if not _sound(child, room - 1, strings):
            return False
    return True


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("ascii", "replace")


def _bad_string(what: str, where: str, kind: str) -> InputRefused:
    return InputRefused(
        "INVALID_STRING",
        f"{what} holds {kind} with a lone UTF-16 surrogate at {where}, which is not text",
        {"path": where},
    )


def _too_deep(what: str, where: str) -> InputRefused:
    return InputRefused(
        "INPUT_TOO_DEEP", f"{what} is nested deeper than {MAX_DEPTH} levels at {where}", {"path": where}
    )
