"""``{{ ... }}`` templates: Jinja2's sandbox, native values, deterministic and bounded.

A string that is exactly one ``{{ expression }}`` yields the value itself (a number stays a number, a list a
list); any other string with template syntax renders to text. Compiled templates are cached by their source,
which is pure, so the interpreter compiles each template once per worker process rather than once per run.
Each top-level :func:`render` spends from one budget of work and size (:mod:`template_budget`), so a hostile
or merely heavy template fails its step promptly instead of stalling the workflow task that renders it; in a
workflow, all the renders of one workflow task also share that task's allowance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import TemplateError

from workflows import template_budget as budget
from workflows import template_checks
from workflows.template_budget import (
    MAX_SEQUENCE,
    MAX_SOURCE,
    TEMPLATE_COST,
    Budget,
    TaskAllowance,
    TemplateTooCostly,
    Unbudgeted,
)
from workflows.template_sandbox import BoundedEnvironment
from workflows.template_sizes import SCALARS, check_text

ROOTS = frozenset(
    {"input", "steps", "vars", "item", "index", "execution", "secrets", "error", "true", "false"}
)
"""Names a template may start from (besides Jinja's own globals such as ``range``); ``output`` is added
only where it exists, in a step's own ``output`` reshaping."""

_SINGLE = re.compile(r"\A\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\Z", re.DOTALL)
_SECRET_PLACEHOLDER = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class ExpressionError(Exception):
    """A template that does not parse or fails when evaluated."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"{reason} in {expression!r}")
        self.expression = expression
        self.reason = reason


class _Environment(BoundedEnvironment):
    """The bounded sandbox, reading data before methods."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: `input.items` is the key "items", not dict.items (Jinja's default order).
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def _new_environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    # Determinism: workflow code must render the same way on replay, so nothing random.
    env.filters.pop("random", None)
    env.globals.pop("lipsum", None)
    return env


_ENV = _new_environment()


class SecretRef:
    """Stands for ``secrets.NAME`` while rendering in a workflow; renders back to its own placeholder.

    Secrets are substituted only inside activities (:func:`resolve_secrets`), so histories carry the
    placeholder and never the value.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"{{{{ secrets.{self.name} }}}}"

    __html__ = __str__


class SecretPlaceholders:
    """The ``secrets`` object of a workflow-side render context."""

    def __getattr__(self, name: str) -> SecretRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return SecretRef(name)

    def __getitem__(self, name: str) -> SecretRef:
        return SecretRef(name)


SECRETS = SecretPlaceholders()


def is_template(value: object) -> bool:
    """Whether ``value`` is text holding template syntax."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


_TOO_DEEP = "too deeply nested"


@lru_cache(maxsize=4096)
def _compile(source: str) -> Callable[[Mapping[str, Any]], Any]:
    single = _SINGLE.match(source)
    try:
        with Unbudgeted():
            if single:
                expression = _ENV.compile_expression(single.group("expr"), undefined_to_none=False)
                return lambda context: expression(**context)
            template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(source, f"syntax error: {exc.message}") from None
    return lambda context: template.render(**context)


def _compiled(source: str, *, bounded: bool) -> Callable[[Mapping[str, Any]], Any]:
    """``source`` compiled; bounded, a source too long or too deep to compile is an :class:`ExpressionError`.

    Unbounded, it compiles as before the bounds existed, failing the workflow task rather than the step as
    it did then: a history recorded then replays the same way.
    """
    if bounded and len(source) > MAX_SOURCE:
        raise ExpressionError(
            source[:80], f"a template of {len(source):,} characters, more than {MAX_SOURCE:,}"
        )
    try:
        return _compile(source)
    except (RecursionError, SyntaxError):
        # Jinja's parser and Python's compiler both recurse once per level of nesting.
        if not bounded:
            raise
        raise ExpressionError(source, _TOO_DEEP) from None
    except ValueError:  # Python reads no integer literal of more than 4,300 digits
        if not bounded:
            raise
        raise ExpressionError(source, "syntax error: a number of more than 4,300 digits") from None


def render_text(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one template string against ``context``, within a budget of its own unless in a render."""
    with Budget():
        return _render_text(source, context)


def _render_text(source: str, context: Mapping[str, Any]) -> Any:
    bounded = budget.limited()
    evaluate = _compiled(source, bounded=bounded)
    try:
        budget.spend(TEMPLATE_COST)
        return _Plain(source, bounded)(evaluate(context))
    except ExpressionError:
        raise
    except TemplateTooCostly as exc:
        raise ExpressionError(source, f"too costly: {exc}") from None
    except RecursionError:
        if not bounded:
            raise
        raise ExpressionError(source, _TOO_DEEP) from None
    except (
        TemplateError,
        ArithmeticError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
    ) as exc:
        raise ExpressionError(source, f"{type(exc).__name__}: {exc}") from None


def render(
    value: Any, context: Mapping[str, Any], *, limited: bool = True, task: TaskAllowance | None = None
) -> Any:
    """Render every template inside ``value`` (strings, and lists and dicts of them) against ``context``.

    All of ``value`` shares one budget of work and size, and spends from ``task``, the allowance of the
    workflow task rendering it, when given; ``limited=False`` renders as before the bounds existed, for
    workflow histories recorded then.
    """
    with Budget(limited, task):
        return _render(value, context)


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_text(value, context) if is_template(value) else value
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    return value


_SETTLED = frozenset({str, int, bool, type(None)})
"""JSON data as it is (a float is checked for NaN and Infinity, a list or dict is copied)."""


class _Plain:
    """Turns a Jinja result into JSON data, refusing anything that is not.

    The result is copied, and JSON has no shared references: a list the result holds several times is
    copied every time, and every copy counts towards the cap on a value's items. Lists and dicts of plain
    values are copied at C speed; going through anything else costs a step of work per item.
    """

    __slots__ = ("bounded", "room", "source")

    def __init__(self, source: str, bounded: bool) -> None:
        self.source = source
        self.bounded = bounded
        self.room = MAX_SEQUENCE

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is list or kind is tuple or kind is range:
            return self._list(value)
        if kind is dict:
            return self._dict(value)
        return self._other(value)

    def _list(self, value: list[Any] | tuple[Any, ...] | range) -> list[Any]:
        self._take(len(value))
        if self._flat(value, set(map(type, value))):
            return list(value)
        budget.spend(work=len(value))
        return [v if type(v) in _SETTLED else self(v) for v in value]

    def _dict(self, value: dict[Any, Any]) -> dict[str, Any]:
        self._take(len(value))
        if set(map(type, value)) == {str} and self._flat(value.values(), set(map(type, value.values()))):
            return dict(value)
        budget.spend(work=len(value))
        return {
            k if type(k) is str else self._key(k): v if type(v) in _SETTLED else self(v)
            for k, v in value.items()
        }

    def _flat(self, values: Collection[Any], types: set[type]) -> bool:
        if not types <= SCALARS:
            return False
        budget.spend(volume=len(values))
        if float in types and self.bounded:
            for number in values if types <= {int, float, bool} else filter(_is_float, values):
                self._finite(number)
        return True

    def _take(self, items: int) -> None:
        self.room -= items
        if self.room < 0 and self.bounded:
            raise TemplateTooCostly(
                f"a result of more than {MAX_SEQUENCE:,} items (a list held several times counts every time)"
            )

    def _key(self, key: Any) -> str:
        check_text(key)
        return str(key)

    def _finite(self, number: float) -> None:
        if not math.isfinite(number):
            # Nothing downstream can hold it: JSON has no NaN or Infinity, and the API would show null.
            raise ExpressionError(self.source, f"the result is {number}, a number JSON cannot hold")

    def _other(self, value: Any) -> Any:
        if isinstance(value, Undefined):
            raise ExpressionError(self.source, f"undefined value: {value._undefined_message}")
        if isinstance(value, float):
            if self.bounded:
                self._finite(value)
            return value
        if isinstance(value, bool | int | str):
            return value
        if isinstance(value, SecretRef):
            return str(value)
        if isinstance(value, Mapping):
            return self._dict(dict(value.items()))
        if isinstance(value, list | tuple | range):
            return self._list(value)
        raise ExpressionError(self.source, f"the result is a {type(value).__name__}, not JSON data")


def _is_float(value: Any) -> bool:
    return type(value) is float


def truthy(value: Any) -> bool:
    """Truth of a rendered ``when``: Python truth, except that text 'false'/'no'/'0' is false."""
    if isinstance(value, str):
        return value.strip().lower() not in {"", "false", "no", "0", "none", "null"}
    return bool(value)


def templates_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every template string inside ``value`` with its JSON path under ``path``."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from templates_in(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from templates_in(v, f"{path}.{k}")


def check_template(source: str, known_steps: frozenset[str], extra_roots: frozenset[str]) -> list[str]:
    """Problems with one template found without running it: syntax, unknown names, unknown step ids, and
    what its constants show it would do that no render may (:mod:`template_checks`)."""
    try:
        _compiled(source, bounded=True)
        tree = _ENV.parse(source)
        problems = template_checks.problems(tree)
    except ExpressionError as exc:
        return [exc.reason]
    except TemplateSyntaxError as exc:
        return [f"syntax error: {exc.message}"]
    except RecursionError:
        return [_TOO_DEEP]
    allowed = ROOTS | extra_roots | frozenset(_ENV.globals)
    for name in sorted(meta.find_undeclared_variables(tree) - allowed):
        problems.append(
            f"unknown name {name!r}; templates start from {', '.join(sorted(ROOTS - {'true', 'false'}))}"
        )
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        step_id: str | None = None
        if isinstance(node, nodes.Getattr):
            target, step_id = node.node, node.attr
        elif isinstance(node, nodes.Getitem):
            target, step_id = node.node, _constant(node.arg)
        else:
            continue
        named_steps = isinstance(target, nodes.Name) and target.name == "steps"
        if named_steps and step_id is not None and step_id not in known_steps:
            problems.append(f"steps.{step_id} names no step of this definition")
    return problems


def _constant(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def resolve_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    """Replace ``{{ secrets.NAME }}`` placeholders with their values (in activities only)."""
    if isinstance(value, str):
        if "secrets." not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            # Environment variables reach the settings lower-cased, so names match without regard to case.
            value = secrets.get(name, secrets.get(name.lower()))
            if value is None:
                raise ExpressionError(match.group(0), f"secret {name} is not configured")
            return value

        return _SECRET_PLACEHOLDER.sub(substitute, value)
    if isinstance(value, list):
        return [resolve_secrets(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: resolve_secrets(v, secrets) for k, v in value.items()}
    return value
