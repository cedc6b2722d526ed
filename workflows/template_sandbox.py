"""Jinja2's sandbox with every costly operation paid for from the render's :mod:`template_budget`.

Three hooks see all the work a template can do. The compiled tree is rewritten so that each loop pays for
every item it takes (weighted by the size of its body), each macro or ``caller`` body pays when it runs,
``~`` joins through a bounded concatenation, and comparisons, dict keys and subscripts pay for the data they
go through. The sandbox's own hooks (calls, ``+ - * ** %``, output, ``str.format``) check the size of what
they would make before making it. Filters and tests are wrapped to pay for what they go through and to check
what they make. Whatever turns data into text or compares it measures it first (:mod:`template_sizes`), so
that a list held many times by reference is refused before its text or comparison runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from types import BuiltinFunctionType, GeneratorType, MethodType
from typing import Any

from jinja2 import nodes
from jinja2.environment import Environment
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter, modifies_known_mutable
from jinja2.utils import _PassArg, pass_environment, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from workflows import template_budget as budget
from workflows import template_sizes as sizes
from workflows.template_budget import (
    MAX_EXPONENT,
    MAX_INT_BITS,
    MAX_RANGE,
    MAX_SEQUENCE,
    TemplateTooCostly,
)

# Internal filter names hold a ':', which no template can write.
_ITEMS = "metered:items"
_SPEND = "metered:spend"
_CONCAT = "metered:concat"
_SCAN = "metered:scan"
_MADE = "metered:made"

_SEQUENCES = (str, list, tuple)
_JINJA_CALL = 20
_COMPARING_CALLS = frozenset({"changed", "count", "dict", "fromkeys", "get", "index", "pop", "remove",
                              "setdefault", "sort", "update"})  # fmt: skip
"""Methods and callables that compare or hash their arguments: ``dict.get``, ``dict(pairs)``,
``loop.changed``, ..."""
_COMPARING_ITEMS = frozenset({"count", "index", "remove", "sort"})
"""``list`` methods that also compare the list's own items."""


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, bounding the work and sizes of each render made under a ``template_budget.Budget``."""

    intercepted_binops = frozenset({"+", "-", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.filters = {name: _bounded_filter(name, f) for name, f in {**self.filters, **_REPLACED}.items()}
        self.filters.update(
            {
                _ITEMS: budget.counted,
                _SPEND: budget.spend,
                _CONCAT: _concat,
                _SCAN: sizes.compared,
                _MADE: budget.made,
            }
        )
        self.tests = {name: _bounded_test(name, test) for name, test in self.tests.items()}  # type: ignore[arg-type]
        self.globals["range"] = bounded_range

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        # Every compiled template, from text or from compile_expression's own tree, passes here.
        _Metering().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init)

    def concat(self, chunks: Iterable[str]) -> str:
        """Join output, and the buffers of blocks and macros, refusing text over the size cap."""
        # Each chunk is text already paid for as it was made, so holding them all costs only references.
        parts = list(chunks)
        budget.will_make(sum(map(len, parts)))
        return "".join(parts)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # Calling a macro, or a recursive loop's `loop`, sets up a fresh context in Python: tens of steps.
        budget.spend(_JINJA_CALL if isinstance(obj, Macro | LoopContext) else 1)
        if isinstance(obj, BuiltinFunctionType | type):
            # C code (str and list methods, dict(), namespace()) may go through all of its arguments.
            for value in (*args, *kwargs.values()):
                budget.scanned(value)
        receiver = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", None)
        if name in _COMPARING_CALLS:
            if isinstance(receiver, list) and name in _COMPARING_ITEMS:
                sizes.compared(receiver)
            for value in args:
                sizes.compared(value)
        if isinstance(receiver, str):
            budget.scanned(receiver)
            if obj.__name__ == "join" and args:
                return budget.made(receiver.join(sizes.joined(receiver, args[0], strict=True)))
            size = _str_method_size(receiver, obj.__name__, args, kwargs)
            if size is not None:
                budget.will_make(size)
        elif isinstance(receiver, list | dict) and modifies_known_mutable(receiver, obj.__name__):
            grown = len(receiver) + 1 + sum(len(v) for v in args if isinstance(v, list | tuple | dict))
            budget.fits(grown + len(kwargs))
        return budget.made(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "-":
            # Numbers, or dict views made sets: hashing their items goes through them in depth.
            return sizes.compared(left) - sizes.compared(right)
        if operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                budget.will_make(len(left) + len(right))
            return left + right
        if operator == "*":
            if isinstance(left, _SEQUENCES) and isinstance(right, int):
                _repeat(len(left) * right)
            elif isinstance(right, _SEQUENCES) and isinstance(left, int):
                _repeat(len(right) * left)
            elif isinstance(left, int) and isinstance(right, int):
                _check_int_bits(left.bit_length() + right.bit_length())
            return left * right
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise TemplateTooCostly(f"exponent {right} is larger than {MAX_EXPONENT}")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                _check_int_bits(left.bit_length() * right)
            return left**right
        if isinstance(left, str):
            budget.will_make(sizes.printf_size(left, right))
        return budget.made(left % right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own wrapper with a formatter that checks each field's width before padding to it.
        if not isinstance(value, MethodType | BuiltinFunctionType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        receiver = value.__self__
        if not isinstance(receiver, str):
            return None
        formatter: SandboxedFormatter
        if isinstance(receiver, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=receiver.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                return type(receiver)(formatter.vformat(receiver, (), args[0]))
            return type(receiver)(formatter.vformat(receiver, args, kwargs))

        return functools.update_wrapper(bounded_format, value)


def bounded_range(*args: int) -> range:
    """``range`` of at most :data:`MAX_RANGE` items."""
    values = range(*args)
    length = sizes.range_length(*args)
    if length > MAX_RANGE:
        raise TemplateTooCostly(f"range of {length:,} items is larger than {MAX_RANGE:,}")
    return values


class _Metering(NodeTransformer):
    """Rewrites a parsed template so that repeated work pays as it repeats."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        # Items a loop's filter (`for x in xs if ...`) skips still cost the filter.
        per_item = 1 + (_weight([node.test]) if node.test is not None else 0)
        node.iter = _internal(_ITEMS, node.iter, nodes.Const(per_item))  # type: ignore[arg-type]
        node.body.insert(0, _spending(node.body))
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Macro:
        self.generic_visit(node)
        node.body.insert(0, _spending(node.body))
        return node

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.CallBlock:
        self.generic_visit(node)
        node.body.insert(0, _spending(node.body))
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return _internal(_CONCAT, nodes.Tuple(node.nodes, "load", lineno=node.lineno))

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Expr:
        self.generic_visit(node)
        # A slice copies: checked and paid for like any value made.
        if isinstance(node.arg, nodes.Slice):
            return _internal(_MADE, node)
        # A key is hashed, and a tuple's hash goes through all of it.
        node.arg = _scanning(node.arg)
        return node

    def visit_Pair(self, node: nodes.Pair) -> nodes.Pair:
        self.generic_visit(node)
        node.key = _scanning(node.key)  # a dict literal's key, hashed likewise
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = _scanning(node.expr)
        for operand in node.ops:
            operand.expr = _scanning(operand.expr)
        return node


def _internal(name: str, value: nodes.Expr, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(value, name, list(args), [], None, None, lineno=value.lineno)


def _spending(body: list[nodes.Node]) -> nodes.ExprStmt:
    lineno = body[0].lineno if body else 1
    return nodes.ExprStmt(_internal(_SPEND, nodes.Const(_weight(body), lineno=lineno)), lineno=lineno)


def _scanning(expr: nodes.Expr) -> nodes.Expr:
    # Only a constant is known small: a list or tuple literal may hold anything.
    return expr if isinstance(expr, nodes.Const) else _internal(_SCAN, expr)


def _weight(body: Iterable[nodes.Node]) -> int:
    """Nodes in ``body``: what running it once costs, as loop iterations and calls are counted."""
    return sum(1 + sum(1 for _ in node.find_all(nodes.Node)) for node in body)


def _finalize(value: Any) -> str:
    # Every `{{ }}` output passes here: the common small case is only a length check.
    kind = type(value)
    text: str
    if kind is str:
        text = value
    else:
        if kind not in sizes.SCALARS:
            sizes.check_text(value)
        text = str(value)
    if len(text) > budget.SMALL:
        budget.will_make(len(text))
    return text


def _concat(parts: tuple[Any, ...]) -> str:
    return "".join(sizes.joined("", parts))


def _repeat(size: int) -> None:
    # Refused even in an unlimited render: `*` was bounded before anything else was.
    if size > MAX_SEQUENCE:
        raise TemplateTooCostly(f"result of * would hold {size:,} items, more than {MAX_SEQUENCE:,}")
    budget.will_make(size)


def _check_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS and budget.limited():
        raise TemplateTooCostly(f"a number of about {bits:,} bits, more than {MAX_INT_BITS:,}")


def _str_method_size(text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """Length of what a ``str`` method that can outgrow its input would make, or None for the others."""
    if name in {"ljust", "rjust", "center", "zfill"} and args and isinstance(args[0], int):
        return max(len(text), args[0])
    if name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        return len(text) + text.count("\t") * max(tabsize, 0) if isinstance(tabsize, int) else None
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else -1
        return sizes.replaced_size(text, args[0], args[1], count)
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        return len(text) * max(longest, 1)
    return None


class _BoundedFormatter(SandboxedFormatter):
    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:  # !r, !s, !a
            sizes.check_text(value)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        sizes.check_text(value)
        budget.will_make(sizes.format_spec_size(format_spec))
        return budget.made(super().format_field(value, format_spec))


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


# -- filters and tests ---------------------------------------------------------------------------------------

_STRUCTURAL = frozenset(
    {"abs", "attr", "batch", "count", "d", "default", "filesizeformat", "first", "float", "int", "items",
     "join", "last", "length", "list", "map", "reject", "rejectattr", "reverse", "round", "select",
     "selectattr", "slice", "sum"}
)  # fmt: skip
"""Filters that never make text of their value or compare its items (``join`` measures each item itself).
Every other filter, including any Jinja adds later, is measured as text before it runs."""

_COMPARING = frozenset({"dictsort", "groupby", "max", "min", "sort", "unique"})
"""Filters that compare or hash their value's items, going through them in depth."""

_CONSTANT_TIME = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "float", "int", "items", "last", "length", "round",
     "safe"}
)  # fmt: skip
"""Filters that do not go through their value (``items`` hands back a generator, paid for as it is used)."""


def _center(value: Any, width: Any = 80) -> None:
    if isinstance(width, int):
        budget.will_make(max(len(str(value)), width))


def _indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    text = str(value)
    prefix = width if isinstance(width, int) else len(str(width))
    budget.will_make(len(text) + (text.count("\n") + 1) * max(prefix, 0))


def _wordwrap(
    value: Any, width: Any = 79, break_long_words: bool = True, wrapstring: Any = None, *_: Any
) -> None:
    text = str(value)
    # A line ends at a space, newline or hyphen, or every `width` characters of a long word.
    breaks = sum(text.count(c) for c in " \t\n-") + len(text) // max(
        width if isinstance(width, int) else 1, 1
    )
    budget.will_make(len(text) + (breaks + 1) * len("\n" if wrapstring is None else str(wrapstring)))


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    budget.will_make(sizes.printf_size(str(value), kwargs or args))


def _replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    budget.will_make(sizes.replaced_size(str(value), str(old), str(new), -1 if count is None else count))


def _pprint(value: Any) -> None:
    # pprint writes each level's repr again for every level it breaks into lines, in Python.
    size = sizes.pretty_size(value)
    budget.will_make(size)
    budget.spend(work=size // 8)


def _tojson(value: Any, indent: Any = None) -> None:
    if indent is not None:
        budget.will_make(sizes.pretty_size(value, indent if isinstance(indent, int) else len(str(indent))))


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    if fill_with is not None and isinstance(linecount, int):
        budget.will_make(linecount)


def _slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    if isinstance(slices, int):
        budget.spend(work=slices)


_CHARACTERS_PER_STEP = {"urlize": 1, "wordwrap": 4, "title": 8, "urlencode": 16, "wordcount": 16}
"""Filters that go through text in Python rather than C, and how many characters cost a step of work."""

_CHECKS: dict[str, Callable[..., None]] = {
    "batch": _batch,
    "center": _center,
    "format": _format,
    "indent": _indent,
    "pprint": _pprint,
    "replace": _replace,
    "slice": _slice,
    "tojson": _tojson,
    "wordwrap": _wordwrap,
}
"""Filters whose result can outgrow their input, with how they check its size before making it."""


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    sizes.check_text(d)
    return FILTERS["join"](eval_ctx, sizes.joined(str(d), value), d)  # type: ignore[no-any-return]


@pass_environment
def _sum(environment: Environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, list | tuple):
        return FILTERS["sum"](environment, iterable, attribute, start)
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    # Adding lists copies the total so far each time: added one by one, each copy is checked and paid for.
    total = start
    for item in iterable:
        if isinstance(item, _SEQUENCES):
            budget.will_make(len(total) + len(item))
        total = total + item
    return total


_REPLACED: dict[str, Callable[..., Any]] = {"join": _join, "sum": _sum}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    at = 0 if _PassArg.from_obj(func) is None else 1  # where the filtered value is, after any context
    check = _CHECKS.get(name)
    constant_time = name in _CONSTANT_TIME
    characters_per_step = _CHARACTERS_PER_STEP.get(name)
    comparing = name in _COMPARING
    textual = not comparing and name not in _STRUCTURAL

    @functools.wraps(func)  # keeps Jinja's pass_context / pass_eval_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        value = args[at]
        budget.spend()
        if textual:
            if type(value) not in sizes.SCALARS:
                sizes.check_text(value)
            if len(args) > at + 1 or kwargs:
                for argument in (*args[at + 1 :], *kwargs.values()):
                    sizes.check_text(argument)
        elif comparing:
            sizes.compared(value)
        if not constant_time:
            budget.processed(value)
        if characters_per_step is not None:
            budget.spend(work=len(str(value)) // characters_per_step)
        if check is not None:
            check(*args[at:], **kwargs)
        result = func(*args, **kwargs)
        if type(result) is GeneratorType:
            # A generator over a generator (`range(n) | map(...)`) pays as its items are taken; over a
            # list, its items were paid for above.
            return result if budget.is_sized(value) else budget.counted(result, 1)
        return budget.made(result)

    return bounded


_TYPE_TESTS = frozenset(
    {"boolean", "callable", "defined", "escaped", "false", "float", "integer", "iterable", "mapping", "none",
     "number", "sameas", "sequence", "string", "true", "undefined"}
)  # fmt: skip
"""Tests that look at their value's type or identity, never into it. ``lower`` and ``upper`` make it text;
any other test compares or hashes what it is given."""

_MODULO_TESTS = {"divisibleby": None, "even": 2, "odd": 2}
"""Tests that take their value ``%`` a number (given, or fixed), which formats text when the value is text."""


def _bounded_test(name: str, test: Callable[..., Any]) -> Callable[..., Any]:
    at = 0 if _PassArg.from_obj(test) is None else 1
    textual = name in ("lower", "upper")
    modulo = name in _MODULO_TESTS
    comparing = not textual and not modulo and name not in _TYPE_TESTS

    @functools.wraps(test)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget.spend()
        if textual:
            sizes.check_text(args[at])
        elif modulo and isinstance(args[at], str):
            divisor = _MODULO_TESTS[name] or (args[at + 1] if len(args) > at + 1 else 0)
            budget.will_make(sizes.printf_size(args[at], divisor))
        elif comparing:
            for value in args[at:]:
                sizes.compared(value)
        return test(*args, **kwargs)

    return bounded
