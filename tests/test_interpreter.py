"""``DefinitionWorkflow`` on the real Temporal dev server: flow, flow control and the workflow-side steps."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Worker

from core import names
from tests.support.outcome import completes, fails, failure_of, statuses
from tests.support.run import start
from tests.support.target import Target
from workflows.messages import ExecutionSnapshot

FAST_RETRY = {"max_attempts": 3, "initial_interval": "100ms", "backoff": 1.0}
ONCE = {"max_attempts": 1}


def value(step_id: str, val: Any, **fields: Any) -> dict[str, Any]:
    """A transform step whose output is ``val``."""
    return {"id": step_id, "type": "transform", "with": {"value": val}, **fields}


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "interp", "steps": list(steps), **fields}


def record_times(snapshot: ExecutionSnapshot) -> dict[str, tuple[str, str]]:
    return {r.id: (r.started_at or "", r.closed_at or "") for r in snapshot.steps}


# -- flow ----------------------------------------------------------------------------------------------------


async def test_steps_run_in_sequence_and_see_earlier_outputs(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("a", "{{ input.n + 1 }}"),
            value("b", "{{ steps.a.output * 10 }}"),
            value(
                "c", {"a": "{{ steps.a.output }}", "b": "{{ steps.b.output }}", "sa": "{{ steps.a.status }}"}
            ),
        ),
        {"n": 1},
    )
    assert result.output == {"a": 2, "b": 20, "sa": "completed"}
    assert statuses(result) == {"a": "completed", "b": "completed", "c": "completed"}
    assert result.definition == "interp" and result.version == 1
    assert result.started_at and result.closed_at and result.error is None


async def test_parallel_branches_run_together_and_a_join_waits_for_both(
    client: Client, worker: Worker, target: Target
) -> None:
    slow = {"url": f"{target.url}/slow", "query": {"seconds": 0.5}}
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {"id": "left", "type": "http_request", "depends_on": [], "with": slow},
            {"id": "right", "type": "http_request", "depends_on": [], "with": slow},
            value(
                "join",
                ["{{ steps.left.output.body.slept }}", "{{ steps.right.output.body.slept }}"],
                depends_on=["left", "right"],
            ),
        ),
    )
    assert result.output == [0.5, 0.5]
    times = record_times(result)
    # Both branches were running at once, and the join started after both had closed.
    assert times["right"][0] < times["left"][1] and times["left"][0] < times["right"][1]
    assert times["join"][0] >= max(times["left"][1], times["right"][1])


async def test_a_dag(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("root", 1),
            value("double", "{{ steps.root.output * 2 }}", depends_on=["root"]),
            value("triple", "{{ steps.root.output * 3 }}", depends_on=["root"]),
            value("alone", "independent", depends_on=[]),
            value("sum", "{{ steps.double.output + steps.triple.output }}", depends_on=["double", "triple"]),
            value("last", "{{ [steps.sum.output, steps.alone.output] }}", depends_on=["sum", "alone"]),
        ),
    )
    assert result.output == [5, "independent"]
    assert set(statuses(result).values()) == {"completed"}


async def test_a_failing_branch_cancels_a_running_delay_and_fails_the_execution(
    client: Client, worker: Worker
) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {"id": "nap", "type": "delay", "depends_on": [], "with": {"duration": "1h"}},
            value("warmup", 1, depends_on=[]),
            {"id": "boom", "type": "fail", "with": {"message": "no"}},
            value("after", 2, depends_on=["nap", "boom"]),
        ),
    )
    assert failure.type == "FAILED_BY_DEFINITION"
    assert failure.statuses() == {
        "nap": "cancelled",
        "warmup": "completed",
        "boom": "failed",
        "after": "skipped",
    }


async def test_a_failing_branch_cancels_a_running_activity(
    client: Client, worker: Worker, target: Target
) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {
                "id": "slow",
                "type": "http_request",
                "depends_on": [],
                "with": {"url": f"{target.url}/slow?seconds=1.5"},
            },
            {
                "id": "broken",
                "type": "http_request",
                "depends_on": [],
                "with": {"url": f"{target.url}/status/400"},
            },
        ),
    )
    assert failure.type == "HttpClientError"
    assert failure.error["step"] == "broken"
    assert failure.statuses() == {"slow": "cancelled", "broken": "failed"}


# -- optional, on_error, when, output ------------------------------------------------------------------------


async def test_optional_and_on_error_continue_let_the_flow_go_on(
    client: Client, worker: Worker, target: Target
) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "maybe",
                "type": "http_request",
                "optional": True,
                "retry": ONCE,
                "with": {"url": f"{target.url}/status/500"},
            },
            {
                "id": "whatever",
                "type": "http_request",
                "on_error": "continue",
                "with": {"url": f"{target.url}/status/404"},
            },
            value("next", "{{ [steps.maybe.status, steps.maybe.error.code, steps.whatever.error.code] }}"),
        ),
    )
    assert result.output == ["failed", "HttpServerError", "HttpClientError"]
    assert statuses(result) == {"maybe": "failed", "whatever": "failed", "next": "completed"}
    maybe = next(r for r in result.steps if r.id == "maybe")
    assert maybe.error is not None and maybe.error.code == "HttpServerError" and maybe.error.step == "maybe"


async def test_fallback_steps_recover_a_failed_step(client: Client, worker: Worker, target: Target) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "fetch",
                "type": "http_request",
                "with": {"url": f"{target.url}/status/404"},
                "on_error": [
                    value("note", "{{ steps.fetch.error.code }}"),
                    value("cached", {"from": "cache", "because": "{{ steps.note.output }}"}),
                ],
            },
            value("use", "{{ [steps.fetch.status, steps.fetch.output] }}"),
        ),
    )
    assert result.output == ["recovered", {"from": "cache", "because": "HttpClientError"}]
    assert statuses(result) == {
        "fetch": "recovered",
        "note": "completed",
        "cached": "completed",
        "use": "completed",
    }
    fetch = next(r for r in result.steps if r.id == "fetch")
    assert fetch.error is not None and fetch.error.code == "HttpClientError"


async def test_a_failing_fallback_fails_the_execution(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {
                "id": "first",
                "type": "fail",
                "with": {"error_code": "FIRST"},
                "on_error": [{"id": "second", "type": "fail", "with": {"error_code": "SECOND"}}],
            },
            value("never", 1),
        ),
    )
    assert failure.type == "SECOND"
    assert failure.statuses() == {"first": "failed", "second": "failed", "never": "skipped"}


async def test_when_false_skips_a_step_and_its_dependents_still_run(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("maybe", "ran", when="{{ input.enabled }}"),
            value("literal_false", "ran", when=False, depends_on=[]),
            value("text_false", "ran", when="false", depends_on=[]),
            value("yes", "ran", when="{{ input.count > 2 }}", depends_on=[]),
            value("after", "{{ [steps.maybe.status, steps.maybe.output, steps.yes.output] }}",
                  depends_on=["maybe", "literal_false", "text_false", "yes"]),
        ),
        {"enabled": False, "count": 3},
    )  # fmt: skip
    assert result.output == ["skipped", None, "ran"]
    assert statuses(result) == {
        "maybe": "skipped",
        "literal_false": "skipped",
        "text_false": "skipped",
        "yes": "completed",
        "after": "completed",
    }


async def test_a_step_output_reshapes_what_is_stored(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("raw", {"items": [1, 2, 3], "noise": "x"}, output="{{ output['items'] | sum }}"),
            value("use", "{{ steps.raw.output + 1 }}"),
        ),
    )
    assert result.output == 7


# -- workflow-side step types --------------------------------------------------------------------------------


async def test_set_and_vars(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {"id": "remember", "type": "set", "with": {"total": "{{ vars.base + input.n }}", "label": "x"}},
            {"id": "again", "type": "set", "with": {"total": "{{ vars.total * 2 }}"}},
            value(
                "use",
                {"total": "{{ vars.total }}", "label": "{{ vars.label }}", "set": "{{ steps.again.output }}"},
            ),
            vars={"base": 10},
        ),
        {"n": 5},
    )
    assert result.output == {"total": 30, "label": "x", "set": {"total": 30}}


def switch(*cases: tuple[Any, str], default: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": "route",
        "type": "switch",
        "cases": [{"when": when, "steps": [value(step_id, step_id)]} for when, step_id in cases],
    }
    if default is not None:
        step["default"] = [value(default, default)]
    return step


@pytest.mark.parametrize(
    ("n", "chosen", "case"),
    [(1, "small", 0), (50, "medium", 1), (500, "large", "default")],
)
async def test_switch_runs_the_first_true_case_or_the_default(
    client: Client, worker: Worker, n: int, chosen: str, case: int | str
) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            switch(("{{ input.n < 10 }}", "small"), ("{{ input.n < 100 }}", "medium"), default="large"),
            value(
                "after",
                {"case": "{{ steps.route.output.case }}", "chosen": f"{{{{ steps.{chosen}.output }}}}"},
            ),
        ),
        {"n": n},
    )
    assert result.output == {"case": case, "chosen": chosen}
    ran = {step_id for step_id, status in statuses(result).items() if status == "completed"}
    assert ran == {"route", chosen, "after"}


async def test_switch_without_a_matching_case_or_default(client: Client, worker: Worker) -> None:
    result = await completes(client, worker.task_queue, definition(switch((False, "never"))))
    assert result.output == {"case": "default"}
    assert statuses(result) == {"route": "completed", "never": "skipped"}


async def test_fail_ends_the_execution_with_its_code_and_message(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            value("before", 1),
            {
                "id": "stop",
                "type": "fail",
                "with": {"error_code": "OUT_OF_STOCK", "message": "sku {{ input.sku }}"},
            },
            value("after", 2),
        ),
        {"sku": "A-1"},
    )
    assert failure.type == "OUT_OF_STOCK"
    assert "stop" in failure.message and "sku A-1" in failure.message
    assert failure.error == {"code": "OUT_OF_STOCK", "message": "sku A-1", "step": "stop", "details": None}
    assert failure.statuses() == {"before": "completed", "stop": "failed", "after": "skipped"}
    assert failure.snapshot["closed_at"]


async def test_fail_has_a_default_code(client: Client, worker: Worker) -> None:
    failure = await fails(client, worker.task_queue, definition({"id": "stop", "type": "fail"}))
    assert failure.type == "FAILED_BY_DEFINITION"


async def test_succeed_ends_the_execution_early(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("a", 41),
            switch(("{{ steps.a.output > 40 }}", "big")),
            {"id": "done", "type": "succeed", "with": {"output": {"answer": "{{ steps.a.output + 1 }}"}}},
            {"id": "never", "type": "fail"},
            output="not used: succeed sets the output",
        ),
    )
    assert result.output == {"answer": 42}
    assert statuses(result) == {
        "a": "completed",
        "route": "completed",
        "big": "completed",
        "done": "completed",
        "never": "skipped",
    }


async def test_succeed_inside_a_switch_ends_the_execution(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            {
                "id": "route",
                "type": "switch",
                "cases": [
                    {"when": True, "steps": [{"id": "done", "type": "succeed", "with": {"output": "early"}}]}
                ],
            },
            {"id": "never", "type": "fail"},
        ),
    )
    assert result.output == "early"
    assert statuses(result) == {"route": "completed", "done": "completed", "never": "skipped"}


async def test_definition_output(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            value("a", 2),
            value("b", "{{ steps.a.output * 2 }}"),
            output={"a": "{{ steps.a.output }}", "b": "{{ steps.b.output }}", "who": "{{ input.who }}",
                    "run": "{{ execution.definition }}"},
        ),
        {"who": "me"},
    )  # fmt: skip
    assert result.output == {"a": 2, "b": 4, "who": "me", "run": "interp"}


async def test_without_definition_output_the_last_completed_step_is_the_result(
    client: Client, worker: Worker
) -> None:
    result = await completes(
        client, worker.task_queue, definition(value("a", "mine"), value("b", "never", when=False))
    )
    assert result.output == "mine"


async def test_definition_on_error_steps_run_when_the_execution_fails(
    client: Client, worker: Worker, target: Target
) -> None:
    key = uuid.uuid4().hex
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            value("a", 1),
            {"id": "stop", "type": "fail", "with": {"error_code": "BROKEN", "message": "it broke"}},
            on_error=[
                {
                    "id": "alert",
                    "type": "notification",
                    "with": {
                        "channel": "webhook",
                        "url": f"{target.url}/hook/{key}",
                        "payload": {"error": "{{ error }}", "a": "{{ steps.a.output }}"},
                    },
                },
                value("tidy", "{{ error.code }}"),
            ],
        ),
    )
    assert failure.type == "BROKEN"
    assert failure.statuses() == {
        "a": "completed",
        "stop": "failed",
        "alert": "completed",
        "tidy": "completed",
    }
    [hook] = [r for r in target.requests if r["path"] == f"/hook/{key}"]
    assert hook["json"] == {"error": {"code": "BROKEN", "message": "it broke", "step": "stop"}, "a": 1}


async def test_a_failing_on_error_step_does_not_hide_the_original_failure(
    client: Client, worker: Worker
) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(
            {"id": "stop", "type": "fail", "with": {"error_code": "ORIGINAL"}},
            on_error=[{"id": "cleanup", "type": "fail", "with": {"error_code": "CLEANUP"}}],
        ),
    )
    assert failure.type == "ORIGINAL"
    assert failure.statuses() == {"stop": "failed", "cleanup": "failed"}


async def test_on_error_steps_do_not_run_on_success(client: Client, worker: Worker) -> None:
    result = await completes(
        client, worker.task_queue, definition(value("a", 1), on_error=[value("cleanup", 2)])
    )
    assert statuses(result) == {"a": "completed", "cleanup": "skipped"}
    assert result.output == 1


async def test_an_expression_error_fails_the_step(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(value("ok", {"x": 1}), value("bad", "{{ steps.ok.output.missing.deeper }}")),
    )
    assert failure.type == "ExpressionFailed"
    assert failure.error["step"] == "bad"
    assert "steps.ok.output.missing.deeper" in failure.error["message"]
    assert "bad" in failure.message
    assert failure.statuses() == {"ok": "completed", "bad": "failed"}


@pytest.mark.parametrize(
    ("template", "input_"),
    [
        (
            "{% for i in range(input.n) %}{% for j in range(input.n) %}{% for k in range(input.n) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            {"n": 1000},
        ),
        ("{{ 'a'.ljust(input.n) }}", {"n": 300_000_000}),
    ],
    ids=["three nested loops", "a 300 MB padding"],
)
async def test_a_costly_template_fails_its_step_promptly(
    client: Client, worker: Worker, template: str, input_: dict[str, Any]
) -> None:
    # Unbounded, the render held the workflow task past the SDK's deadlock detector: the task failed over and
    # over and the execution stayed QUEUED with no steps and no error.
    started = time.monotonic()
    failure = await fails(
        client, worker.task_queue, definition(value("ok", 1), value("heavy", template)), input_
    )
    assert time.monotonic() - started < 30
    assert failure.type == "ExpressionFailed"
    assert failure.error["step"] == "heavy"
    assert failure.error["message"].startswith("with.value: too costly")
    assert failure.statuses() == {"ok": "completed", "heavy": "failed"}


HEAVY_ITEM = "{% for i in range(300) %}{% for j in range(input.n) %}{% endfor %}{% endfor %}"
"""A render within its own budget (about 150,000 steps of work at n = 480), but heavy."""


@pytest.mark.parametrize(
    "heavy",
    [
        {"id": "heavy", "type": "transform", "with": {"items": "{{ range(100) | list }}", "map": HEAVY_ITEM}},
        {
            "id": "heavy",
            "type": "foreach",
            "items": "{{ range(100) | list }}",
            "parallelism": 100,
            "steps": [value("each", HEAVY_ITEM)],
        },
    ],
    ids=["transform map", "foreach body"],
)
async def test_the_renders_of_one_workflow_task_share_an_allowance(
    client: Client, worker: Worker, heavy: dict[str, Any]
) -> None:
    # Each item's render had a budget of its own, and all of them ran in one workflow task: 100 legal renders
    # held it for seconds, the SDK declared it deadlocked and the execution stayed QUEUED with no error.
    handle = await start(client, worker.task_queue, definition(value("ok", 1), heavy), {"n": 480})
    failure = await asyncio.wait_for(failure_of(handle), 120)
    assert failure.type == "ExpressionFailed"
    assert "too costly: the templates rendered in this workflow task" in failure.error["message"]
    assert failure.statuses()["heavy"] == "failed"


async def test_many_light_renders_in_one_workflow_task_still_run(client: Client, worker: Worker) -> None:
    light = {
        "id": "light",
        "type": "transform",
        "with": {"items": "{{ input.items }}", "filter": "{{ item % 3 }}", "map": {"n": "{{ item * 2 }}"}},
    }
    result = await completes(client, worker.task_queue, definition(light), {"items": list(range(3000))})
    assert result.output == [{"n": i * 2} for i in range(3000) if i % 3]


async def test_an_expression_error_in_when_fails_the_step(client: Client, worker: Worker) -> None:
    failure = await fails(client, worker.task_queue, definition(value("a", 1, when="{{ input.n > 1 }}")), {})
    assert failure.type == "ExpressionFailed"
    assert failure.error["step"] == "a"
    assert failure.error["message"].startswith("when:")


async def test_an_expression_error_in_the_definition_output_fails_the_execution(
    client: Client, worker: Worker
) -> None:
    failure = await fails(
        client, worker.task_queue, definition(value("a", 1), output="{{ steps.a.output.nothing }}")
    )
    assert failure.type == "ExpressionFailed"
    assert "output" in failure.error["message"]


async def test_a_rendered_config_of_the_wrong_type_fails_as_config_invalid(
    client: Client, worker: Worker
) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition({"id": "stop", "type": "fail", "with": {"error_code": "{{ input.code }}"}}),
        {"code": 7},
    )
    assert failure.type == "ConfigInvalid"
    assert "with.error_code" in failure.error["message"]


# -- queries and cancellation --------------------------------------------------------------------------------


async def test_describe_and_history_queries_of_a_running_execution(client: Client, worker: Worker) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition(value("a", 1), {"id": "nap", "type": "delay", "with": {"duration": "1h"}}),
    )
    snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    while snapshot.current_step != "nap":  # the first workflow task may not have run yet
        snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    assert snapshot.state == "PROCESSING"
    assert statuses(snapshot) == {"a": "completed", "nap": "running"}
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, CancelledError)
    final = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    assert final.state == "CANCELLED"
    assert statuses(final) == {"a": "completed", "nap": "cancelled"}
    assert final.error is not None and final.error.code == "Cancelled"


async def test_cancelling_runs_the_on_error_steps(client: Client, worker: Worker, target: Target) -> None:
    key = uuid.uuid4().hex
    handle = await start(
        client,
        worker.task_queue,
        definition(
            {"id": "nap", "type": "delay", "with": {"duration": "1h"}},
            on_error=[
                {
                    "id": "alert",
                    "type": "notification",
                    "with": {
                        "channel": "webhook",
                        "url": f"{target.url}/hook/{key}",
                        "payload": "{{ error.code }}",
                    },
                }
            ],
        ),
    )
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert [r["json"] for r in target.requests if r["path"] == f"/hook/{key}"] == ["Cancelled"]


async def test_failed_execution_records_transitions(client: Client, worker: Worker) -> None:
    handle = await start(client, worker.task_queue, definition({"id": "stop", "type": "fail"}))
    await failure_of(handle)
    history = await handle.query(names.QUERY_HISTORY)
    assert [(t["from_state"], t["to_state"]) for t in history] == [
        ("CREATED", "QUEUED"),
        ("QUEUED", "PROCESSING"),
        ("PROCESSING", "FAILED"),
    ]
    assert history[-1]["step"] == "stop"


async def test_cancelling_during_an_activity_step_ends_cancelled(
    client: Client, worker: Worker, target: Target
) -> None:
    handle = await start(
        client,
        worker.task_queue,
        definition({"id": "slow", "type": "http_request", "with": {"url": f"{target.url}/slow?seconds=1.5"}}),
    )
    snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    while snapshot.current_step != "slow":
        snapshot = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, CancelledError)
    final = await handle.query(names.QUERY_DESCRIBE, result_type=ExecutionSnapshot)
    assert final.state == "CANCELLED"
    assert statuses(final) == {"slow": "cancelled"}


async def test_a_snapshot_that_is_not_a_definition_fails_the_execution(
    client: Client, worker: Worker
) -> None:
    """Only the API validates; a snapshot started by hand that is not a definition fails, it does not hang."""
    handle = await start(client, worker.task_queue, {"name": "broken", "steps": [{"id": "a"}]})
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "ConfigInvalid"
    assert "$.steps[0].type" in failure.value.cause.message
