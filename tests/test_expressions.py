"""Templates (native values, sandbox, bounds, secrets) and durations, as pure functions."""

from __future__ import annotations

import math
from typing import Any

import pytest

from workflows import expressions
from workflows.durations import format_duration, parse_duration
from workflows.expressions import ExpressionError, render, render_text, resolve_secrets

CONTEXT: dict[str, Any] = {
    "n": 21,
    "s": "0123",
    "items": [{"sku": "a", "price": 2}, {"sku": "b", "price": 3}],
    "input": {"name": "Ada"},
    "secrets": expressions.SECRETS,
}


# -- native values -------------------------------------------------------------------------------------------


def test_a_lone_expression_keeps_its_type() -> None:
    assert render_text("{{ n * 2 }}", CONTEXT) == 42
    assert render_text("{{ n / 2 }}", CONTEXT) == 10.5
    assert render_text("{{ n > 3 }}", CONTEXT) is True
    assert render_text("{{ items | map(attribute='sku') | list }}", CONTEXT) == ["a", "b"]
    assert render_text("{{ items[1] }}", CONTEXT) == {"sku": "b", "price": 3}
    assert render_text("{{ none }}", CONTEXT) is None


def test_a_string_that_looks_like_a_number_stays_a_string() -> None:
    assert render_text("{{ s }}", CONTEXT) == "0123"
    assert render_text("{{ s | int }}", CONTEXT) == 123


def test_mixed_text_renders_to_a_string() -> None:
    assert render_text("n={{ n }}", CONTEXT) == "n=21"
    assert render_text("{{ n }}{{ n }}", CONTEXT) == "2121"
    assert render_text("{% for i in range(3) %}{{ i }}{% endfor %}", CONTEXT) == "012"


def test_render_walks_lists_and_dicts_and_leaves_plain_values() -> None:
    value = {"a": ["{{ n }}", "x", 3, None], "b": {"c": "hi {{ input.name }}"}}
    assert render(value, CONTEXT) == {"a": [21, "x", 3, None], "b": {"c": "hi Ada"}}


# -- failures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["{{ ''.__class__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ n.__class__ }}"],
)
def test_sandbox_escape_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render_text(source, CONTEXT)
    assert "unsafe" in caught.value.reason


@pytest.mark.parametrize(
    "source", ["{{ nope }}", "{{ input.missing }}", "x {{ input.missing }} y", "{{ items[5] }}"]
)
def test_undefined_names_fail(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render_text(source, CONTEXT)
    assert caught.value.expression == source
    assert source in str(caught.value)


def test_a_runtime_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        render_text("{{ n / 0 }}", CONTEXT)


def test_a_syntax_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="syntax error"):
        render_text("{{ n + }}", CONTEXT)


def test_a_result_that_is_not_json_data_is_refused() -> None:
    with pytest.raises(ExpressionError, match="not JSON data"):
        render_text("{{ cycler }}", CONTEXT)


# -- bounds and determinism ----------------------------------------------------------------------------------


def test_range_is_bounded() -> None:
    assert len(
        render_text("{{ range(expressions_max) | list }}", {"expressions_max": expressions.MAX_RANGE})
    ) == (expressions.MAX_RANGE)
    with pytest.raises(ExpressionError, match="larger than"):
        render_text("{{ range(100000000) | list }}", CONTEXT)


def test_repeating_a_string_or_list_is_bounded() -> None:
    assert render_text("{{ 'ab' * 3 }}", CONTEXT) == "ababab"
    with pytest.raises(ExpressionError, match="more than"):
        render_text("{{ 'a' * 100000000 }}", CONTEXT)
    with pytest.raises(ExpressionError, match="more than"):
        render_text("{{ 100000000 * [0] }}", CONTEXT)


def test_powers_are_bounded() -> None:
    assert render_text("{{ 2 ** 10 }}", CONTEXT) == 1024
    with pytest.raises(ExpressionError, match="exponent"):
        render_text("{{ 10 ** 100000 }}", CONTEXT)


def test_there_is_no_randomness() -> None:
    with pytest.raises(ExpressionError, match="random"):
        render_text("{{ items | random }}", CONTEXT)
    with pytest.raises(ExpressionError):
        render_text("{{ lipsum() }}", CONTEXT)


# -- secrets -------------------------------------------------------------------------------------------------


def test_secrets_render_back_to_their_placeholder() -> None:
    assert render_text("{{ secrets.TOKEN }}", CONTEXT) == "{{ secrets.TOKEN }}"
    assert render_text("Bearer {{ secrets.TOKEN }}", CONTEXT) == "Bearer {{ secrets.TOKEN }}"
    assert render_text("{{ secrets['TOKEN'] }}", CONTEXT) == "{{ secrets.TOKEN }}"


def test_resolve_secrets_substitutes_values_everywhere() -> None:
    rendered = render({"h": "Bearer {{ secrets.TOKEN }}", "l": ["{{ secrets.TOKEN }}", 1]}, CONTEXT)
    assert resolve_secrets(rendered, {"TOKEN": "t0k"}) == {"h": "Bearer t0k", "l": ["t0k", 1]}
    assert resolve_secrets("no secrets here", {}) == "no secrets here"


def test_resolving_a_missing_secret_fails_without_showing_others() -> None:
    with pytest.raises(ExpressionError, match="secret MISSING is not configured") as caught:
        resolve_secrets("{{ secrets.TOKEN }} {{ secrets.MISSING }}", {"TOKEN": "t0k"})
    assert "t0k" not in str(caught.value)


# -- truthiness and static checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (None, False), (0, False), (1, True), ("false", False), ("No", False),
     ("0", False), ("", False), ("yes", True), ([], False), ([0], True)],
)  # fmt: skip
def test_truthy(value: Any, expected: bool) -> None:
    assert expressions.truthy(value) is expected


def test_check_template_reports_unknown_names_and_steps() -> None:
    problems = expressions.check_template("{{ foo }} {{ steps.x.output }}", frozenset({"y"}), frozenset())
    assert len(problems) == 2
    assert "unknown name 'foo'" in problems[0]
    assert "steps.x" in problems[1]
    assert expressions.check_template("{{ steps.y.output | length }}", frozenset({"y"}), frozenset()) == []


# -- durations -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("7d", 604800), ("2w", 1209600),
     ("1.5h", 5400), (" 10S ", 10), (12, 12), (0.25, 0.25), (0, 0)],
)  # fmt: skip
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "30", "soon", "5 minutes", "1y", "-5s", -1, True, None, [], math.nan, math.inf]
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(86400) == "1d"
    assert format_duration(7200) == "2h"
    assert format_duration(90) == "90s"
    assert format_duration(0.5) == "0.5s"


def test_dict_keys_win_over_dict_methods() -> None:
    context = {"input": {"items": [1, 2], "keys": "k", "values": {"get": 3}}}
    assert render("{{ input.items }}", context) == [1, 2]
    assert render("{{ input.keys }}", context) == "k"
    assert render("{{ input.values.get }}", context) == 3
    assert render("{{ input.items | length }}", context) == 2
