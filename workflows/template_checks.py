"""What a template's source alone shows it would do that no render may, refused when a definition is saved.

Only what is certain from constants is refused here (a render checks the rest as it runs): reaching for
Python internals, constant sizes over the caps, and constant loops nested past the work budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from string import Formatter
from typing import Any

from jinja2 import nodes

from workflows import template_sizes as sizes
from workflows.template_budget import MAX_EXPONENT, MAX_RANGE, MAX_SEQUENCE, MAX_WORK, TemplateTooCostly

_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
_SIZE_FILTERS = frozenset({"center", "indent", "batch"})


def problems(tree: nodes.Template) -> list[str]:
    """Every problem found in ``tree``, in the order of the source."""
    return [*_internals(tree), *_sizes(tree), *_loops(tree.body, 1)]


def _internals(tree: nodes.Template) -> Iterator[str]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else _constant(node.arg)  # type: ignore[attr-defined]
        if isinstance(name, str) and name.startswith("_"):
            yield f"{name!r} is not allowed: names starting with '_' reach Python internals"


def _sizes(tree: nodes.Template) -> Iterator[str]:
    for node in tree.find_all((nodes.Call, nodes.Filter, nodes.Mul, nodes.Pow, nodes.Mod)):
        if isinstance(node, nodes.Call):
            yield from _call_sizes(node)
        elif isinstance(node, nodes.Filter):
            yield from _filter_sizes(node)
        elif isinstance(node, nodes.Mul):
            yield from _repeat_size(node)
        elif isinstance(node, nodes.Pow):
            exponent = _number(node.right)
            if exponent is not None and abs(exponent) > MAX_EXPONENT:
                yield f"exponent {exponent} is larger than {MAX_EXPONENT}"
        elif isinstance(node, nodes.Mod) and isinstance(text := _constant(node.left), str):
            yield from _printf(text)


def _call_sizes(node: nodes.Call) -> Iterator[str]:
    numbers = [_number(arg) for arg in node.args]
    if isinstance(node.node, nodes.Name) and node.node.name == "range":
        length = _range_length(node)
        if length is not None and length > MAX_RANGE:
            yield f"range of {length:,} items is larger than {MAX_RANGE:,}"
    elif isinstance(node.node, nodes.Getattr):
        method, receiver = node.node.attr, _constant(node.node.node)
        if method in _PADDING_METHODS:
            yield from _over_cap(f"{method}()", numbers[:1])
        elif method in ("format", "format_map") and isinstance(receiver, str):
            yield from _format_specs(receiver)


def _filter_sizes(node: nodes.Filter) -> Iterator[str]:
    if node.name in _SIZE_FILTERS:
        yield from _over_cap(f"the {node.name} filter", [_number(arg) for arg in node.args[:1]])
    elif node.name == "format" and node.node is not None and isinstance(text := _constant(node.node), str):
        yield from _printf(text)


def _repeat_size(node: nodes.Mul) -> Iterator[str]:
    for sequence, count in ((node.left, node.right), (node.right, node.left)):
        if isinstance(sequence, nodes.Const | nodes.List | nodes.Tuple) and _number(count) is not None:
            yield from _over_cap("repeating", [_number(count)])
            return


def _printf(text: str) -> Iterator[str]:
    try:
        size = sizes.printf_size(text, ())
    except TemplateTooCostly as exc:
        yield str(exc)
        return
    yield from _over_cap("%-formatting", [size])


def _format_specs(text: str) -> Iterator[str]:
    try:
        specs = [spec for _, field, spec, _ in Formatter().parse(text) if field is not None and spec]
    except ValueError:
        return  # the render reports the malformed format string
    yield from _over_cap("formatting", [sum(sizes.format_spec_size(spec) for spec in specs)])


def _over_cap(what: str, counts: list[int | None]) -> Iterator[str]:
    for size in counts:
        if size is not None and size > MAX_SEQUENCE:
            yield f"{what} would make {size:,} characters or items, more than {MAX_SEQUENCE:,}"


def _loops(body: list[nodes.Node], times: int) -> Iterator[str]:
    """Loops whose constant item counts, multiplied down their nesting, pass the work budget."""
    for node in body:
        inner = times
        if isinstance(node, nodes.For):
            inner = times * (_length(node.iter) or 1)
            if inner > MAX_WORK >= times:
                yield f"loops nested here run {inner:,} times; a render may take {MAX_WORK:,} steps"
                continue
        yield from _loops(list(node.iter_child_nodes()), inner)


def _length(node: nodes.Node) -> int | None:
    if isinstance(node, nodes.List | nodes.Tuple):
        return len(node.items)
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
        return _range_length(node)
    return None


def _range_length(call: nodes.Call) -> int | None:
    """Items in a ``range()`` of constants, however large they are written."""
    numbers = [_number(arg) for arg in call.args]
    if not 1 <= len(numbers) <= 3 or None in numbers or call.kwargs or call.dyn_args or call.dyn_kwargs:
        return None
    try:
        return sizes.range_length(*numbers)  # type: ignore[arg-type]
    except ValueError:  # a step of 0: the render reports it
        return None


def _constant(node: nodes.Node) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def _number(node: nodes.Node) -> int | None:
    if isinstance(node, nodes.Neg):
        number = _number(node.node)
        return None if number is None else -number
    value = _constant(node)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
