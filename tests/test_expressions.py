"""Templates (native values, sandbox, bounds, secrets) and durations, as pure functions."""

from __future__ import annotations

import math
import time
import tracemalloc
from typing import Any

import pytest

from workflows import expressions, template_budget
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
        render_text("{{ range(expressions_max) | list }}", {"expressions_max": template_budget.MAX_RANGE})
    ) == (template_budget.MAX_RANGE)
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


# -- hostile templates: every render is bounded in work and size ---------------------------------------------
# Each of these once allocated hundreds of megabytes or ran for minutes on the workflow task's thread, where
# the SDK's deadlock detector failed the task and the execution sat QUEUED with no error. Sizes and counts
# come from the context where the static check (``check_template``) would otherwise refuse them first.

HOSTILE: dict[str, str] = {
    "ljust": "{{ 'a'.ljust(big) }}",
    "rjust in text": "x{{ 'a'.rjust(big) }}",
    "zfill": "{{ '1'.zfill(big) }}",
    "center filter": "{{ 'a' | center(big) }}",
    "center filter, constant, in text": "x{{ 'a' | center(300000000) }}y",
    "format width": "{{ '{:>300000000}'.format('a') }}",
    "format nested width": "{{ '{:{}}'.format('a', big) }}",
    "format precision": "{{ '{:.300000000f}'.format(1.5) }}",
    "format_map width": "{{ '{a:>300000000}'.format_map({'a': 1}) }}",
    "percent width": "{{ '%300000000s' % 'a' }}",
    "percent precision": "{{ '%.300000000f' % 1.5 }}",
    "percent star width": "{{ '%*s' % (big, 'a') }}",
    "format filter width": "{{ '%300000000s' | format('a') }}",
    "repeated format fields": "{{ ('{0}' * 100000).format('x' * 100000) }}",
    "list concatenation": (
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}"
        "{{ ns.l | length }}"
    ),
    "namespace doubling with ~": (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s | length }}"
    ),
    "list extend doubling": (
        "{% set l = [1] %}{% for i in range(40) %}{% set _ = l.extend(l) %}{% endfor %}{{ l | length }}"
    ),
    "join of repeated big strings": "{{ (['x' * 1000000] * 1000) | join }}",
    "join separator": "{{ range(10000) | join('x' * 1000000) }}",
    "str join": "{{ ('x' * 1000000).join(['a'] * 1000) }}",
    "replace empty": "{{ ('x' * 100000).replace('', 'y' * 100000) }}",
    "replace filter": "{{ ('x' * 100000) | replace('x', 'y' * 100000) }}",
    "expandtabs": "{{ ('\t' * 100000).expandtabs(100000) }}",
    "translate": "{{ ('a' * 100000).translate({97: 'b' * 100000}) }}",
    "indent": "{{ ('\n' * 100000) | indent(100000, blank=true) }}",
    "wordwrap": "{{ ('a ' * 100000) | wordwrap(1, wrapstring='x' * 100000) }}",
    "batch padding": "{{ [1] | batch(300000000, 0) | list }}",
    "slice count": "{{ [1] | slice(300000000) | list }}",
    "sum of lists": "{{ ([['x'] * 10000] * 10000) | sum(start=[]) | length }}",
    "output of a loop": "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
    "literal text in a loop": "{% for i in range(10000) %}" + "x" * 1000 + "{% endfor %}",
    "set block": (
        "{% set s %}{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}{{ s | length }}"
    ),
    "big integers": "{{ ((10 ** 1000) ** 1000) ** 1000 }}",
    "big integer products": (
        "{% set ns = namespace(n=10 ** 999) %}"
        "{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}"
    ),
}

HEAVY: dict[str, str] = {
    "three nested ranges": (
        "{% for i in range(n) %}{% for j in range(n) %}{% for k in range(n) %}{% endfor %}{% endfor %}"
        "{% endfor %}"
    ),
    "nested loops that filter everything out": (
        "{% for i in range(n) %}{% for j in range(n) if false %}{% endfor %}{% endfor %}"
    ),
    "a big loop body": "{% for i in range(n) %}{% for j in range(n) %}"
    + "{{ i }}" * 200
    + "{% endfor %}{% endfor %}",
    "membership in a big list": (
        "{% set big = range(n) | list %}{% for i in range(n) %}{{ (n + 1) in big }}{% endfor %}"
    ),
    "macro fan-out": (
        "{% macro f(d) %}{% if d %}{{ f(d - 1) }}{{ f(d - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    ),
    "sorting in a loop": (
        "{% set big = range(n) | list %}{% for i in range(n) %}{{ big | sort | first }}{% endfor %}"
    ),
    "recursive loop over shared lists": (
        "{% set ns = namespace(l=[]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
        "{% for x in ns.l recursive %}{{ loop(x) }}{% endfor %}"
    ),
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_render_cannot_make_a_huge_value(source: str) -> None:
    with pytest.raises(ExpressionError, match="too costly") as caught:
        render_text(source, {"big": 300_000_000})
    assert caught.value.expression == source


@pytest.mark.parametrize("source", HEAVY.values(), ids=HEAVY.keys())
def test_a_cpu_heavy_render_fails_promptly(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionError, match="too costly"):
        render_text(source, {"n": 10_000})
    # Unbounded, each runs for minutes; the SDK declares a workflow task deadlocked after 2 s.
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "source",
    [
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% set l = [] %}{% set _ = l.append(l) %}{% for x in l recursive %}{{ loop(x) }}{% endfor %}",
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "[" * 150 + "1" + "]" * 150 + " }}",
        "{{ 1" + "+1" * 5000 + " }}",
    ],
    ids=["macro recursion", "recursive loop over itself", "parentheses", "brackets", "long sum"],
)  # fmt: skip
def test_deep_recursion_is_an_expression_error(source: str) -> None:
    with pytest.raises(ExpressionError):
        render_text(source, {})


def test_a_failing_render_fails_the_same_way_every_time() -> None:
    source = HEAVY["three nested ranges"]
    reasons = set()
    for _ in range(3):
        with pytest.raises(ExpressionError) as caught:
            render_text(source, {"n": 1000})
        reasons.add(caught.value.reason)
    assert len(reasons) == 1


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for i in range(1000) %}{{ i }},{% endfor %}", ",".join(map(str, range(1000))) + ","),
        ("{{ range(10000) | map('string') | join(',') | length }}", 48889),
        ("{{ 'a'.ljust(5) ~ '|' }}", "a    |"),
        ("{{ '{:>5}|{:.2f}'.format('a', 1.5) }}", "    a|1.50"),
        ("{{ '%5s|%.1f' % ('a', 2) }}", "    a|2.0"),
        ("{{ 'x' | center(5) }}", "  x  "),
        ("{{ [[1], [2, 3]] | sum(start=[]) }}", [1, 2, 3]),
        ("{{ [1, 2, 3] | batch(2, 0) | list }}", [[1, 2], [3, 0]]),
        ("{{ 'a-b'.replace('-', '+') }}", "a+b"),
        ("{{ ('x' * 1000) | length }}", 1000),
        ("{{ 2 ** 100 }}", 2**100),
        ("{{ 3 in [1, 2, 3] }}", True),
        ("{% set ns = namespace(l=[]) %}{% for i in range(3) %}{% set _ = ns.l.append(i) %}{% endfor %}"
         "{{ ns.l }}", "[0, 1, 2]"),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{% for i in range(3) %}{{ m(i) }}{% endfor %}", "<0><1><2>"),
    ],
)  # fmt: skip
def test_ordinary_templates_stay_within_bounds(source: str, expected: Any) -> None:
    assert render_text(source, CONTEXT) == expected


def test_every_render_gets_a_fresh_budget() -> None:
    source = "{% for i in range(1000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
    for _ in range(50):
        assert render_text(source, CONTEXT) == ""


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("{{ ''.__class__.__mro__ }}", "'__class__'"),
        ("{{ input['__class__'] }}", "'__class__'"),
        ("{{ input.name._private }}", "'_private'"),
        ("{{ 'a'.ljust(300000000) }}", "300,000,000"),
        ("{{ 'a' | center(300000000) }}", "300,000,000"),
        ("{{ 'a' * 300000000 }}", "300,000,000"),
        ("{{ 2 ** 100000 }}", "100000"),
        ("{{ range(100000000) | list }}", "100,000,000"),
        ("{{ '%300000000s' % 'a' }}", "%-formatting"),
        ("{{ '%*s' % (3, 'a') }}", "'*' widths"),
        ("{{ '{:>300000000}'.format('a') }}", "300,000,000"),
        ("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}"
         "{% endfor %}{% endfor %}", "loops nested here run"),
        ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "nested"),
        ("{{ input.name }}" * 20000, "characters"),
    ],
)  # fmt: skip
def test_check_template_refuses_what_it_can_see(source: str, found: str) -> None:
    problems = expressions.check_template(source, frozenset(), frozenset())
    assert problems and found in " ".join(problems), problems


@pytest.mark.parametrize(
    "source",
    [
        "{{ input.name.ljust(20) }}",
        "{{ 'x' * input.n }}",
        "{{ input.n * 300000000 }}",
        "{% for i in range(100) %}{% for j in range(100) %}{{ i * j }}{% endfor %}{% endfor %}",
        "{{ '%5s' % input.name }}",
        "{{ input.items | default(10000000) }}",
    ],
)
def test_check_template_leaves_ordinary_templates_alone(source: str) -> None:
    assert expressions.check_template(source, frozenset(), frozenset()) == []


def test_validating_a_constant_amplifier_allocates_nothing_big() -> None:
    # Jinja folds constant expressions while compiling, which once made the 300 MB string at validation.
    tracemalloc.start()
    try:
        problems = expressions.check_template("x{{ 'a' | center(300000000) }}y", frozenset(), frozenset())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems
    assert peak < 50_000_000


def test_an_unlimited_render_works_as_before_the_bounds() -> None:
    # What histories recorded before the bounds replay with (workflow.patched("template-bounds") unset).
    source = "{{ 'a'.ljust(2000000) | length }}"
    with pytest.raises(ExpressionError, match="too costly"):
        render(source, CONTEXT)
    assert render(source, CONTEXT, limited=False) == 2_000_000
    with pytest.raises(ExpressionError, match="more than"):
        render("{{ 'a' * 100000000 }}", CONTEXT, limited=False)


@pytest.mark.parametrize(
    "template",
    [
        "{{ 1e308 * 10 }}",
        "{{ (1e308 * 10) - (1e308 * 10) }}",
        "{{ 'nan' | float }}",
        "{{ [1, 'inf' | float] }}",
    ],
)
def test_a_number_json_cannot_hold_fails_the_render(template: str) -> None:
    with pytest.raises(ExpressionError, match="JSON cannot hold"):
        render(template, {})
    assert render(template, {}, limited=False) is not None  # as before, for histories recorded then


# -- shared references: a list held many times costs every time it is made text, compared or copied ----------
# Each once passed the bounds, which counted only the outer list: the result's JSON copy went through 100
# million items (48 s, 867 MB), str() made 300 MB before the cap was checked, comparing two such lists took
# seconds, and hashing a tuple of shared tuples went through a billion items.

_L = "{% set L = ['a' * 1000] * 1000 %}"
_AB = "{% set A = [[0] * 1000] * 1000 %}{% set B = [[0] * 1000] * 1000 %}"
_V = "{% set T = ('a',) * 1000 %}{% set U = (T,) * 1000 %}{% set V = (U,) * 1000 %}"

SHARED: dict[str, str] = {
    "the result's copy": "{{ [[[0] * 1000] * 1000] * 100 }}",
    "a result made text": _L + "{{ [L] * 300 }}",
    "output in text": _L + "x{{ [L] * 300 }}",
    "string filter": _L + "{{ ([L] * 300) | string | length }}",
    "tojson filter": _L + "{{ ([L] * 300) | tojson | length }}",
    "a text filter": _L + "{{ ([L] * 300) | upper | length }}",
    "a text filter's argument": _L + "{{ 'x' | replace('x', [L] * 300) | length }}",
    "percent with a tuple": _L + "{{ ('%s' % ([L] * 300,)) | length }}",
    "percent with a mapping": _L + "{{ ('%(a)s' % {'a': [L] * 300}) | length }}",
    "str.format": _L + "{{ '{}'.format([L] * 300) | length }}",
    "str.format !r": _L + "{{ '{!r}'.format([L] * 300) | length }}",
    "concatenation": _L + "{{ (([L] * 300) ~ 'x') | length }}",
    "join": _L + "{{ [[L] * 300] | join | length }}",
    "join's separator": _L + "{{ ['a', 'b'] | join([L] * 300) | length }}",
    "a text test": _L + "{{ ([L] * 300) is lower }}",
    "a namespace made text": _L + "{% set ns = namespace(a=[L] * 300) %}x{{ ns }}",
    "equality": _AB + "{{ [A] * 100 == [B] * 100 }}",
    "membership": _AB + "{{ [B] * 100 in [[A] * 100] }}",
    "an equality test": _AB + "{{ [A] * 100 is eq([B] * 100) }}",
    "sort": _AB + "{{ [[A] * 100, [B] * 100] | sort | length }}",
    "list.count": _AB + "{{ [[A] * 100].count([B] * 100) }}",
    "a dict literal's key": _V + "{{ {V: 1} | length }}",
    "a subscript's key": _V + "{{ {'a': 1}.get(V) is none }}",
    "a subscript": _V + "{{ {'a': 1}[V] is defined }}",
    "a set made by -": _V + "{{ ({'a': V}.items() - []) | length }}",
    "list literals compared": _AB + "{{ [" + ", ".join("A" * 100) + "] == [" + ", ".join("B" * 100) + "] }}",
    "divisibleby on text": "{{ '%300000000s' is divisibleby 1 }}",
    "odd on text": "{{ '%300000000s' is odd }}",
    # Written one item a line, every line indented to its depth.
    "pprint of a deep list": (
        "{% set ns = namespace(l=[0] * 100000) %}{% for i in range(300) %}{% set ns.l = [ns.l] %}{% endfor %}"
        "{{ ns.l | pprint | length }}"
    ),
    "tojson indented": "{% set L = [[0] * 100] * 100 %}{{ L | tojson(indent=10000) | length }}",
}


@pytest.mark.parametrize("source", SHARED.values(), ids=SHARED.keys())
def test_shared_references_cost_every_place_they_appear(source: str) -> None:
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError, match="too costly"):
            render_text(source, CONTEXT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000
    assert time.monotonic() - started < 10  # unbounded, some of these run for minutes


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ [[1, 2]] * 3 }}", [[1, 2], [1, 2], [1, 2]]),
        ("{{ [[[0] * 1000] * 100] * 5 }}", [[[0] * 1000] * 100] * 5),
        ("{% set L = [1, 'a'] %}x{{ [L] * 2 }}", "x[[1, 'a'], [1, 'a']]"),
        ("{% set L = [[0] * 100] * 100 %}{{ L == L and [L] == [L] }}", "True"),
        ("{% set L = ['a' * 100] * 100 %}{{ ([L] * 10) | tojson | length }}", "104020"),
        ("{{ {(1, 2): 'x'}[(1, 2)] }}", "x"),
        ("{% set d = {'a': [1]} %}{{ d.get('a') }} {{ d | dictsort }}", "[1] [('a', [1])]"),
        ("{% set L = [] %}{% set _ = L.append(L) %}x{{ L }}", "x[[...]]"),
    ],
)  # fmt: skip
def test_shared_references_within_bounds_render_as_before(source: str, expected: Any) -> None:
    assert render_text(source, CONTEXT) == expected


def test_a_result_copies_plain_lists_and_dicts_and_refuses_what_json_cannot_hold() -> None:
    rows = [{"id": i, "tags": ["a", "b"], "price": 1.5} for i in range(1_000)]
    result = render("{{ input.rows }}", {"input": {"rows": rows}})
    assert result == rows and result is not rows and result[0] is not rows[0]
    with pytest.raises(ExpressionError, match="JSON cannot hold"):
        render("{{ [[1.5, 'nan' | float]] }}", {})
    with pytest.raises(ExpressionError, match="JSON cannot hold"):
        render("{{ {'a': 'inf' | float} }}", {})
    assert render("{{ {1: [2], none: 'x'} }}", {}) == {"1": [2], "None": "x"}


# -- one allowance for all the renders of a workflow task ----------------------------------------------------


def test_renders_given_one_task_allowance_share_it() -> None:
    heavy = "{% for i in range(300) %}{% for j in range(480) %}{% endfor %}{% endfor %}"
    task = template_budget.TaskAllowance(1)
    for _ in range(5):  # about 150,000 steps each, of the task's 800,000
        assert render(heavy, {}, task=task) == ""
    with pytest.raises(ExpressionError, match="rendered in this workflow task"):
        render(heavy, {}, task=task)
    assert render(heavy, {}, task=template_budget.TaskAllowance(2)) == ""  # the next task starts afresh
    assert render(heavy, {}, limited=False, task=task) == ""  # as before the bounds


def test_each_template_costs_its_render_besides_what_it_does() -> None:
    # A transform over many items renders its map once per item: each render does nothing costly, but
    # together they held the workflow task.
    task = template_budget.TaskAllowance(1)
    templates = ["{{ 1 }}"] * 5_000
    for _ in range(template_budget.MAX_TASK_WORK // (5_000 * template_budget.TEMPLATE_COST)):
        assert render(templates, {}, task=task) == [1] * 5_000
    with pytest.raises(ExpressionError, match="rendered in this workflow task"):
        render(templates, {}, task=task)


# -- constants too large for Python to measure: refused, never a crash ---------------------------------------

HUGE = "1" + "0" * 30


@pytest.mark.parametrize(
    "source",
    [
        "{{ range(" + HUGE + ") }}",
        "{{ range(1, " + HUGE + ", 2) | list }}",
        "{{ range(-" + HUGE + ", 0) | list }}",
        "{% for i in range(" + HUGE + ") %}{% endfor %}",
        "{{ 1" + "0" * 5_000 + " }}",
        "{{ '%" + "9" * 5_000 + "s' % 'a' }}",
        "{{ '%" + "9" * 5_000 + "s' | format('a') }}",
        "{{ '{:" + "9" * 5_000 + "}'.format('a') }}",
        "{{ 'a'.ljust(" + HUGE + ") }}",
        "{{ [0] * " + HUGE + " }}",
    ],
)
def test_check_template_refuses_huge_constants(source: str) -> None:
    problems = expressions.check_template(source, frozenset(), frozenset())
    assert problems, source
    with pytest.raises(ExpressionError, match=r"too costly|syntax error"):
        render_text(source, {})


def test_a_huge_range_from_the_data_is_too_costly() -> None:
    with pytest.raises(ExpressionError, match="too costly: range of 1,000,000,000,000,000,000,000,000,000"):
        render_text("{{ range(n) | length }}", {"n": 10**27})


# -- what an unlimited render (a history recorded before the bounds) compiles ------------------------------


def test_an_unlimited_render_compiles_what_it_compiled_before_the_bounds() -> None:
    long = "{{ input.name }}," * 7_000  # 119,000 characters
    assert render(long, CONTEXT, limited=False) == "Ada," * 7_000
    with pytest.raises(ExpressionError, match="more than 100,000"):
        render(long, CONTEXT)
    deep = "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"
    with pytest.raises(ExpressionError, match="too deeply nested"):
        render(deep, {})
    # Before the bounds this failed the workflow task, not the step: a history holding it replays that way.
    with pytest.raises(RecursionError):
        render(deep, {}, limited=False)
