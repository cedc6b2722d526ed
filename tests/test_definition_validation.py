"""The definition validator: every problem is found, at its JSON path, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.definition import Definition, DefinitionInvalid, parse


def step(step_id: str = "a", step_type: str = "transform", **fields: Any) -> dict[str, Any]:
    """A valid step unless ``fields`` break it; ``with_`` stands for ``with``."""
    body: dict[str, Any] = {"id": step_id, "type": step_type}
    if "with_" in fields:
        body["with"] = fields.pop("with_")
    elif step_type == "transform":
        body["with"] = {"value": 1}
    return {**body, **fields}


def doc(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "sample", "steps": list(steps) or [step()], **fields}


def problems(document: Any) -> list[tuple[str, str]]:
    """(path, message) of every problem ``parse`` reports; fails the test if it reports none."""
    with pytest.raises(DefinitionInvalid) as caught:
        parse(document)
    assert str(caught.value), "the exception text lists the problems"
    return [(p.path, p.message) for p in caught.value.problems]


def paths(document: Any) -> list[str]:
    return [path for path, _ in problems(document)]


# -- valid documents -----------------------------------------------------------------------------------------


def test_a_complete_document_parses() -> None:
    definition = parse(
        {
            "name": "product-import",
            "description": "Import products",
            "input": {
                "type": "object",
                "required": ["supplier_id"],
                "properties": {"supplier_id": {"type": "integer"}},
            },
            "vars": {"base": "https://example.test"},
            "defaults": {"timeout": "45s", "retry": {"max_attempts": 5, "initial_interval": "500ms"}},
            "limits": {"timeout": "2h", "max_concurrent": 5},
            "steps": [
                {
                    "id": "fetch",
                    "type": "http_request",
                    "with": {
                        "method": "get",
                        "url": "{{ vars.base }}/{{ input.supplier_id }}",
                        "auth": {"type": "bearer", "token": "{{ secrets.SUPPLIER_TOKEN }}"},
                        "timeout": "10s",
                    },
                    "timeout": "1m",
                    "retry": {"max_attempts": 2, "initial_interval": 1, "max_interval": "30s"},
                },
                {
                    "id": "count",
                    "type": "transform",
                    "with": {"value": "{{ steps.fetch.output.body | length }}"},
                },
                {"id": "side", "type": "delay", "depends_on": [], "with": {"duration": "1h30m"}},
                {
                    "id": "route",
                    "type": "switch",
                    "depends_on": ["count", "side"],
                    "cases": [{"when": "{{ steps.count.output > 0 }}", "steps": [step("some")]}],
                    "default": [step("none", "set", with_={"empty": True})],
                },
                {
                    "id": "tell",
                    "type": "notification",
                    "with": {"channel": "log", "message": "{{ steps.count.output }} products"},
                    "optional": True,
                    "on_error": [step("fallback", "notification", with_={"channel": "log", "message": "x"})],
                    "output": "{{ output.channel }}",
                },
            ],
            "on_error": [
                {
                    "id": "alert",
                    "type": "notification",
                    "with": {"channel": "webhook", "url": "{{ secrets.URL }}"},
                }
            ],
            "output": {"count": "{{ steps.count.output }}"},
        }
    )
    assert isinstance(definition, Definition)
    assert definition.defaults.timeout == 45.0
    assert definition.defaults.retry.initial_interval == 0.5
    fetch = definition.steps[0]
    assert fetch.timeout == 60.0
    assert fetch.retry is not None and fetch.retry.max_interval == 30.0
    assert definition.steps[2].depends_on == ()
    assert [path for path, _ in definition.all_steps()] == [
        "$.steps[0]",
        "$.steps[1]",
        "$.steps[2]",
        "$.steps[3]",
        "$.steps[3].cases[0].steps[0]",
        "$.steps[3].default[0]",
        "$.steps[4]",
        "$.steps[4].on_error[0]",
        "$.on_error[0]",
    ]


def test_api_call_alias_and_lowercase_method_are_accepted() -> None:
    definition = parse(
        doc(step("c", "api_call", with_={"method": "post", "url": "http://x.test", "body": {}}))
    )
    assert definition.steps[0].type == "api_call"


# -- one problem each ----------------------------------------------------------------------------------------


def test_unknown_step_type() -> None:
    [(path, message)] = problems(doc(step(), step("b", "teleport")))
    assert path == "$.steps[1].type"
    assert "unknown step type 'teleport'" in message
    assert "http_request" in message, "the message lists the known types"


def test_duplicate_step_id() -> None:
    [(path, message)] = problems(doc(step("a"), step("a")))
    assert path == "$.steps[1].id"
    assert "duplicate step id 'a'" in message and "$.steps[0]" in message


def test_duplicate_step_id_nested_in_a_switch_case() -> None:
    switch = step("route", "switch", cases=[{"when": True, "steps": [step("b"), step("a")]}])
    [(path, message)] = problems(doc(step("a"), switch))
    assert path == "$.steps[1].cases[0].steps[1].id"
    assert "first at $.steps[0]" in message


def test_duplicate_step_id_nested_in_a_switch_default() -> None:
    switch = step("route", "switch", cases=[{"when": True, "steps": [step("b")]}], default=[step("b")])
    assert paths(doc(switch)) == ["$.steps[0].default[0].id"]


def test_duplicate_step_id_nested_in_a_fallback() -> None:
    assert paths(doc(step("a", on_error=[step("a")]))) == ["$.steps[0].on_error[0].id"]


def test_duplicate_step_id_between_steps_and_definition_on_error() -> None:
    assert paths(doc(step("a"), on_error=[step("a")])) == ["$.on_error[0].id"]


def test_depends_on_a_missing_step() -> None:
    [(path, message)] = problems(doc(step("a"), step("b", depends_on=["a", "ghost"])))
    assert path == "$.steps[1].depends_on[1]"
    assert "'ghost'" in message


def test_depends_on_a_step_of_another_list() -> None:
    switch = step("route", "switch", cases=[{"when": True, "steps": [step("inner", depends_on=["a"])]}])
    assert paths(doc(step("a"), switch)) == ["$.steps[1].cases[0].steps[0].depends_on[0]"]


def test_depends_on_itself() -> None:
    [(path, message)] = problems(doc(step("a"), step("b", depends_on=["b"])))
    assert path == "$.steps[1].depends_on[0]"
    assert "itself" in message


def test_a_cycle() -> None:
    [(path, message)] = problems(
        doc(step("a", depends_on=[]), step("b", depends_on=["c"]), step("c", depends_on=["b"]))
    )
    assert path == "$.steps[1].depends_on"
    assert "cycle" in message and "b -> c -> b" in message


def test_a_cycle_through_the_implicit_previous_step() -> None:
    # b waits for a (the step before it); a names b.
    [(path, message)] = problems(doc(step("a", depends_on=["b"]), step("b")))
    assert path.endswith("depends_on")
    assert "cycle" in message


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"timeout": "soon"}, "$.steps[0].timeout"),
        ({"timeout": -5}, "$.steps[0].timeout"),
        ({"timeout": True}, "$.steps[0].timeout"),
        ({"retry": {"initial_interval": "1 minute"}}, "$.steps[0].retry.initial_interval"),
        ({"retry": {"max_interval": "1y"}}, "$.steps[0].retry.max_interval"),
    ],
)
def test_a_bad_duration_on_a_step(fields: dict[str, Any], path: str) -> None:
    [(where, message)] = problems(doc(step("a", **fields)))
    assert where == path
    assert "duration" in message


def test_a_bad_delay_duration() -> None:
    [(path, message)] = problems(doc(step("wait", "delay", with_={"duration": "forever"})))
    assert path == "$.steps[0].with.duration"
    assert "not a duration" in message


def test_a_delay_duration_may_be_a_template() -> None:
    parse(doc(step("wait", "delay", with_={"duration": "{{ input.wait }}"})))


def test_a_delay_needs_duration_or_until() -> None:
    [(path, message)] = problems(doc(step("wait", "delay", with_={})))
    assert path == "$.steps[0].with"
    assert "exactly one of 'duration' and 'until'" in message


def test_a_bad_default_duration() -> None:
    assert paths(doc(defaults={"timeout": "fast"})) == ["$.defaults.timeout"]


def test_a_template_that_does_not_parse() -> None:
    [(path, message)] = problems(doc(step("a", with_={"value": {"list": ["ok", "{{ 1 + }}"]}})))
    assert path == "$.steps[0].with.value.list[1]"
    assert message.startswith("syntax error")


def test_a_when_that_does_not_parse() -> None:
    [(path, message)] = problems(doc(step("a", when="{{ input.x == }}")))
    assert path == "$.steps[0].when"
    assert "syntax error" in message


def test_a_template_naming_an_unknown_root() -> None:
    [(path, message)] = problems(doc(step("a", with_={"value": "{{ inputs.x }}"})))
    assert path == "$.steps[0].with.value"
    assert "unknown name 'inputs'" in message


def test_a_template_naming_an_unknown_step() -> None:
    [(path, message)] = problems(doc(step("a"), step("b", with_={"value": "{{ steps.c.output }}"})))
    assert path == "$.steps[1].with.value"
    assert "steps.c" in message


def test_a_template_naming_an_unknown_step_by_subscript() -> None:
    assert paths(doc(step("a", when="{{ steps['nope'].status == 'completed' }}"))) == ["$.steps[0].when"]


def test_a_template_in_a_switch_case_when() -> None:
    switch = step("route", "switch", cases=[{"when": "{{ nobody }}", "steps": [step("b")]}])
    assert paths(doc(switch)) == ["$.steps[0].cases[0].when"]


def test_output_templates_may_use_output_only_in_step_output() -> None:
    parse(doc(step("a", output="{{ output * 2 }}")))
    assert paths(doc(step("a"), output="{{ output }}")) == ["$.output"]
    assert paths(doc(step("a"), output={"x": "{{ steps.b.output }}"})) == ["$.output.x"]


def test_http_request_without_url() -> None:
    [(path, message)] = problems(doc(step("call", "http_request", with_={"method": "GET"})))
    assert path == "$.steps[0].with.url"
    assert "required" in message.lower()


def test_http_request_with_an_unknown_key() -> None:
    [(path, message)] = problems(
        doc(step("call", "http_request", with_={"url": "http://x.test", "verb": "GET"}))
    )
    assert path == "$.steps[0].with.verb"
    assert "not permitted" in message


def test_http_request_with_a_bad_method_and_incomplete_auth() -> None:
    assert sorted(
        paths(
            doc(
                step(
                    "call",
                    "api_call",
                    with_={
                        "url": "http://x.test",
                        "method": "FETCH",
                        "auth": {"type": "basic", "username": "u"},
                    },
                )
            )
        )
    ) == ["$.steps[0].with.auth", "$.steps[0].with.method"]


def test_notification_webhook_without_url() -> None:
    [(path, message)] = problems(doc(step("tell", "notification", with_={"channel": "webhook"})))
    assert path == "$.steps[0].with"
    assert "url" in message


def test_notification_with_an_unknown_key_and_channel() -> None:
    assert sorted(
        paths(doc(step("tell", "notification", with_={"channel": "pigeon", "message": "hi", "cc": "me"})))
    ) == ["$.steps[0].with.cc", "$.steps[0].with.channel"]


def test_a_switch_without_cases_and_a_transform_with_cases() -> None:
    assert sorted(
        paths(doc(step("route", "switch", with_={}), step("t", cases=[{"when": True, "steps": [step("x")]}])))
    ) == ["$.steps[0].cases", "$.steps[1].cases"]


def test_a_bad_on_error_mode() -> None:
    [(path, message)] = problems(doc(step("a", on_error="explode")))
    assert path == "$.steps[0].on_error"
    assert "'fail' or 'continue'" in message


def test_a_bad_step_id() -> None:
    assert paths(doc(step("has space"))) == ["$.steps[0].id"]


def test_an_unknown_key_on_a_step() -> None:
    assert paths(doc(step("a", retries=3))) == ["$.steps[0].retries"]


def test_no_steps() -> None:
    assert paths({"name": "sample", "steps": []}) == ["$.steps"]


def test_invalid_input_json_schema() -> None:
    [(path, message)] = problems(doc(input={"type": "object", "properties": {"n": {"type": "integr"}}}))
    assert path == "$.input.properties.n.type"
    assert "not a valid JSON Schema" in message


@pytest.mark.parametrize("document", [[{"name": "x"}], "name: x", None, 42])
def test_a_document_that_is_not_an_object(document: Any) -> None:
    [(path, message)] = problems(document)
    assert path == "$"
    assert "object" in message


def test_missing_name_and_bad_name() -> None:
    assert paths({"steps": [step()]}) == ["$.name"]
    assert paths(doc(name="Not A Slug")) == ["$.name"]


# -- all at once ---------------------------------------------------------------------------------------------


def test_structural_problems_are_all_reported_at_once() -> None:
    found = paths(
        {
            "name": "sample",
            "steps": [
                step("a", timeout="never"),
                step("b", retry={"initial_interval": "x"}),
                step("c", on_error="explode"),
                {"type": "transform"},
            ],
        }
    )
    assert sorted(found) == [
        "$.steps[0].timeout",
        "$.steps[1].retry.initial_interval",
        "$.steps[2].on_error",
        "$.steps[3].id",
    ]


def test_a_failing_lone_step_does_not_also_report_an_empty_list() -> None:
    assert paths(doc(step("a", timeout="never"))) == ["$.steps[0].timeout"]


def test_semantic_problems_are_all_reported_at_once() -> None:
    found = paths(
        doc(
            step("a"),
            step("a", depends_on=["ghost"]),
            step("b", "teleport"),
            step("c", with_={"value": "{{ steps.zzz.output }}"}),
            step("d", "http_request", with_={"uri": "http://x.test"}),
            step("e", "delay", with_={"duration": "a while"}),
            input={"type": 3},
        )
    )
    assert sorted(found) == [
        "$.input.type",
        "$.steps[1].depends_on[0]",
        "$.steps[1].id",
        "$.steps[2].type",
        "$.steps[3].with.value",
        "$.steps[4].with.uri",
        "$.steps[4].with.url",
        "$.steps[5].with.duration",
    ]
