"""Hypothesis strategies for definition documents: mostly valid ones, near misses, and garbage.

The valid ones mix the workflow-side steps (transform, set, switch, foreach, parallel, delay, wait, fail,
succeed, validate) with activities that need nothing external beyond a loopback target (http_request,
notification to the log, emit, ai_process with the local rules), and sprinkle expressions, good and bad, in
every place a template may stand. Durations are kept short, so a run of one ends within seconds.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

GOOD_EXPRESSIONS = [
    "{{ input }}",
    "{{ input.missing }}",
    "{{ vars.a | default(1) }}",
    "{{ [1, 2, 3] }}",
    "{{ {'k': 'v'} }}",
    "{{ 1 / 0 }}",
    "{{ execution.id }}",
    "{{ steps }}",
    "{{ range(10) | list }}",
    "{{ 'x' * 3 }}",
    "{{ (input.items or []) | length }}",
    "{{ true }}",
    "{{ none }}",
    "plain text",
    "count {{ 1 + 1 }} here",
]
"""Templates that validate; some fail when they run (division by zero), which a run must survive."""
BAD_EXPRESSIONS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ undefined_name }}",
    "{{",
    "{{ input. }}",
    "{% for x in y %}",
]


def pick(good: list[Any], bad: list[Any], broken: bool) -> st.SearchStrategy[Any]:
    """One of ``good``; in a ``broken`` document sometimes one of ``bad`` instead."""
    return st.sampled_from(good + bad) if broken else st.sampled_from(good)


_json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=12)


def json_values(broken: bool) -> st.SearchStrategy[Any]:
    """JSON values with expressions among the strings."""
    return st.recursive(
        _json_scalars | pick(GOOD_EXPRESSIONS, BAD_EXPRESSIONS, broken),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )


def conditions(broken: bool) -> st.SearchStrategy[Any]:
    return st.booleans() | pick(["{{ 1 < 2 }}", "{{ 2 < 1 }}", "{{ input.flag }}"], BAD_EXPRESSIONS, broken)


def durations(broken: bool) -> st.SearchStrategy[Any]:
    return pick(["0s", "10ms", "200ms", "1s", 0, 0.1, "{{ 0 }}"], ["-1s", "forever", "1h"], broken)


short_durations = st.sampled_from(["0s", "10ms", "200ms", "1s", 0.05])


def _leaf_configs(target_url: str, broken: bool) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """``with`` of each leaf step type; ``target_url`` is a loopback server the http steps may call."""
    paths = st.sampled_from(["/echo", "/status/200", "/status/404", "/status/500", "/text", "/health"])
    values = json_values(broken)
    texts = st.text(min_size=1, max_size=20) | pick(GOOD_EXPRESSIONS, BAD_EXPRESSIONS, broken)
    rules = [
        {"rule": "required", "field": "sku"},
        {"rule": "min", "field": "price", "value": 0},
        {"rule": "pattern", "field": "sku", "pattern": "^[a-z]+$"},
        {"rule": "type", "field": "sku", "type": "string"},
    ]
    return {
        "transform": st.fixed_dictionaries({"value": values})
        | st.fixed_dictionaries(
            {"items": st.sampled_from(["{{ [1, 2, 3] }}", "{{ input.items }}", [1, 2]])},
            optional={"filter": conditions(broken), "map": values},
        ),
        "set": st.dictionaries(pick(["a", "b", "count"], ["1bad"], broken), values, min_size=1, max_size=3),
        "delay": st.fixed_dictionaries({"duration": durations(broken)}),
        "wait": st.fixed_dictionaries(
            {"event": pick(["approve", "go"], ["bad name!"], broken), "timeout": short_durations},
            optional={"default": values},
        ),
        "fail": st.fixed_dictionaries({}, optional={"message": st.text(max_size=20)}),
        "succeed": st.fixed_dictionaries({}, optional={"output": values}),
        "validate": st.fixed_dictionaries(
            {
                "items": st.sampled_from(["{{ [{'sku': 'a'}, {}] }}", "{{ input }}", [{"price": 1}]]),
                "rules": st.lists(
                    pick(rules, [{"rule": "max"}, {"rule": "pattern", "field": "x", "pattern": "("}], broken),
                    min_size=1,
                    max_size=3,
                ),
            }
        ),
        "http_request": st.fixed_dictionaries(
            {"url": paths.map(lambda path: f"{target_url}{path}")},
            optional={"method": pick(["GET", "POST", "get"], ["BREW"], broken), "body": values},
        ),
        "notification": st.fixed_dictionaries(
            {"channel": pick(["log"], ["pager"], broken), "message": texts}
        ),
        "emit": st.fixed_dictionaries(
            {"event": pick(["fuzz.happened"], ["bad event name"], broken)}, optional={"data": values}
        ),
        "ai_process": st.fixed_dictionaries(
            {"task": pick(["summarize"], ["teleport"], broken), "text": texts}
        )
        | st.fixed_dictionaries(
            {"task": st.just("translate"), "text": texts, "target_language": st.just("fr")}
        )
        | st.fixed_dictionaries({"task": st.just("classify"), "text": texts, "labels": st.just(["a", "b"])}),
    }


def _flow(draw: st.DrawFn, broken: bool) -> dict[str, Any]:
    """Optional flow control every step may carry."""
    flow: dict[str, Any] = {}
    if draw(st.booleans()):
        flow["when"] = draw(conditions(broken))
    if draw(st.integers(0, 5)) == 0:
        flow["optional"] = True
    if draw(st.integers(0, 5)) == 0:
        flow["on_error"] = draw(pick(["continue", "fail"], ["explode"], broken))
    if draw(st.integers(0, 5)) == 0:
        flow["timeout"] = draw(st.sampled_from(["2s", "5s", 3]))
    if draw(st.integers(0, 5)) == 0:
        attempts = draw(pick([1, 2], [0], broken))
        flow["retry"] = {"max_attempts": attempts, "initial_interval": "100ms"}
    return flow


@st.composite
def steps_block(
    draw: st.DrawFn, target_url: str, broken: bool, depth: int = 0, prefix: str = "s"
) -> list[dict[str, Any]]:
    """A list of steps (with unique ids), nested up to two levels."""
    configs = _leaf_configs(target_url, broken)
    kinds = list(configs) + (["switch", "foreach", "parallel"] if depth < 2 else [])
    block: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        step_id = f"{prefix}{index}"
        kind = draw(st.sampled_from(kinds))
        step: dict[str, Any] = {"id": step_id, "type": kind, **_flow(draw, broken)}

        # Called at once, within this iteration, so the loop variable it reads is the current one.
        def nested(part: str) -> list[dict[str, Any]]:
            return draw(steps_block(target_url, broken, depth + 1, f"{step_id}{part}"))  # noqa: B023

        if kind == "switch":
            step["cases"] = [
                {
                    "when": draw(conditions(broken)),
                    "steps": nested(f"c{i}"),
                }
                for i in range(draw(st.integers(1, 2)))
            ]
            if draw(st.booleans()):
                step["default"] = nested("d")
        elif kind == "foreach":
            step["items"] = draw(st.sampled_from(["{{ [1, 2, 3] }}", "{{ range(5) | list }}", "{{ input }}"]))
            step["parallelism"] = draw(st.integers(1, 3))
            step["steps"] = nested("e")
        elif kind == "parallel":
            step["branches"] = {f"b{i}": nested(f"b{i}") for i in range(draw(st.integers(1, 2)))}
        else:
            step["with"] = draw(configs[kind])
        if block and draw(st.integers(0, 4)) == 0:
            step["depends_on"] = draw(pick([[], [block[0]["id"]]], [["nowhere"]], broken))
        block.append(step)
    return block


@st.composite
def definitions(draw: st.DrawFn, target_url: str) -> dict[str, Any]:
    """A definition document, valid more often than not: one in four may carry a mistake anywhere."""
    broken = draw(st.integers(0, 3)) == 0
    document: dict[str, Any] = {
        "name": draw(pick(["fuzz-flow", "fuzz_flow2"], ["Bad Name"], broken)),
        "steps": draw(steps_block(target_url, broken)),
        "failure": draw(
            st.sampled_from([{"suspend": False, "retries": []}, {"suspend": True, "retries": []}])
        ),
        "defaults": {"timeout": "5s", "retry": {"max_attempts": 2, "initial_interval": "100ms"}},
    }
    if draw(st.booleans()):
        document["vars"] = {"a": draw(json_values(broken))}
    if draw(st.integers(0, 3)) == 0:
        document["output"] = draw(json_values(broken))
    if draw(st.integers(0, 4)) == 0:
        document["limits"] = draw(pick([{"timeout": "30s"}, {"max_concurrent": 2}], [{"key": "x"}], broken))
    return document


@st.composite
def near_misses(draw: st.DrawFn, target_url: str) -> Any:
    """A generated definition with one part broken: a key dropped, a value of the wrong type."""
    document = draw(definitions(target_url))
    key = draw(st.sampled_from(["name", "steps", "defaults", "failure"]))
    breakage = draw(st.sampled_from(["drop", "null", "number", "list", "string"]))
    replacements = {"null": None, "number": 7, "list": [1, "x"], "string": "{{ steps }}"}
    if breakage == "drop":
        document.pop(key, None)
    else:
        document[key] = replacements[breakage]
    return document


garbage = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
) | st.fixed_dictionaries({"name": json_values(True), "steps": json_values(True)})
"""Any JSON at all, and objects that only look like definitions."""


def documents(target_url: str) -> st.SearchStrategy[Any]:
    """What the validation fuzz sends: mostly generated definitions, some near misses, some garbage."""
    generated = definitions(target_url)
    return st.one_of(generated, generated, generated, near_misses(target_url), garbage)
