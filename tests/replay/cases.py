"""The executions whose histories are committed for replay: examples plus interpreter features."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HISTORIES = Path(__file__).parent / "histories"


@dataclass(frozen=True)
class ReplayCase:
    """A definition run once by the recorder; ``{target}`` in it is the loopback HTTP server's URL."""

    name: str
    definition: dict[str, Any]
    input: dict[str, Any] = field(default_factory=dict)
    cancel_after_s: float | None = None
    cancel_by: str | None = None
    """Who cancels it, sent as the API sends it (``CancelRequest``)."""
    signals: tuple[tuple[str, Any], ...] = ()
    """Sent once the execution is WAITING."""
    retry_patch: dict[str, Any] | None = None
    """Once the execution is SUSPENDED, it is retried with this input patch."""
    advance: dict[str, Any] | None = None
    """Once the execution runs a step nobody serves (``unserved``), it is advanced with this output."""


def _example(file: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / file).read_text())
    return document


FEATURES: list[ReplayCase] = [
    ReplayCase(
        "feature-dag-http",
        {
            "name": "feature-dag-http",
            "steps": [
                {
                    "id": "left",
                    "type": "http_request",
                    "depends_on": [],
                    "with": {"url": "{target}/echo?side=left"},
                },
                {
                    "id": "right",
                    "type": "http_request",
                    "depends_on": [],
                    "with": {"url": "{target}/echo?x=right"},
                },
                {
                    "id": "join",
                    "type": "transform",
                    "depends_on": ["left", "right"],
                    "with": {
                        "value": "{{ [steps.left.output.body.query.side, steps.right.output.body.query.x] }}"
                    },
                },
                {
                    "id": "route",
                    "type": "switch",
                    "cases": [
                        {
                            "when": "{{ 'left' in steps.join.output }}",
                            "steps": [{"id": "yes", "type": "set", "with": {"seen": True}}],
                        }
                    ],
                    "default": [{"id": "no", "type": "set", "with": {"seen": False}}],
                },
                {
                    "id": "note",
                    "type": "notification",
                    "with": {"channel": "log", "message": "seen={{ vars.seen }}"},
                },
            ],
        },
    ),
    ReplayCase(
        "feature-fallback-and-failure",
        {
            "name": "feature-fallback-and-failure",
            "steps": [
                {
                    "id": "call",
                    "type": "http_request",
                    "with": {"url": "{target}/status/404"},
                    "on_error": [{"id": "fallback", "type": "transform", "with": {"value": "cached"}}],
                },
                {
                    "id": "maybe",
                    "type": "http_request",
                    "optional": True,
                    "with": {"url": "{target}/status/400"},
                },
                {"id": "pause", "type": "delay", "with": {"duration": "1s"}},
                {"id": "stop", "type": "fail", "with": {"message": "stopped after {{ steps.call.output }}"}},
            ],
            "on_error": [
                {
                    "id": "alert",
                    "type": "notification",
                    "with": {"channel": "log", "message": "{{ error.message }}"},
                }
            ],
        },
    ),
    ReplayCase(
        "feature-cancelled",
        {
            "name": "feature-cancelled",
            "steps": [{"id": "wait", "type": "delay", "with": {"duration": "1h"}}],
            "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
        },
        cancel_after_s=1.0,
    ),
    ReplayCase(
        "feature-template-bounds",
        {
            "name": "feature-template-bounds",
            "failure": {"suspend": False, "retries": []},
            "steps": [
                {
                    "id": "fine",
                    "type": "transform",
                    "with": {"value": "{% for i in range(input.n) %}{{ i }}{% endfor %}"},
                },
                {"id": "costly", "type": "transform", "with": {"value": "{{ 'a'.ljust(input.n ** 8) }}"}},
            ],
        },
        {"n": 20},
    ),
    ReplayCase(
        "feature-template-task-allowance",
        {
            "name": "feature-template-task-allowance",
            "failure": {"suspend": False, "retries": []},
            "steps": [
                {
                    "id": "light",
                    "type": "transform",
                    "with": {"items": "{{ range(input.n) | list }}", "map": "{{ item * 2 }}"},
                },
                {
                    # About 150,000 steps of work per item, each within its render's budget: the items
                    # together pass the workflow task's allowance at the sixth.
                    "id": "heavy",
                    "type": "transform",
                    "with": {
                        "items": "{{ range(input.n) | list }}",
                        "map": "{% for i in range(300) %}{% for j in range(480) %}{% endfor %}{% endfor %}",
                    },
                },
            ],
        },
        {"n": 20},
    ),
]


EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "hello": {"name": "Ada"},
    "health-check": {"base_url": "{target}"},
    "order-approval-routing": {"order_id": "A-1", "total": 2500},
    "nightly-report": {"report_date": "2024-05-01", "settle": "1s"},
}
"""Inputs for the examples that need some; ``{target}`` is replaced as in definitions."""


FLOW: list[ReplayCase] = [
    ReplayCase(
        "flow-foreach-parallel-validate",
        {
            "name": "flow-foreach-parallel-validate",
            "steps": [
                {
                    "id": "check",
                    "type": "validate",
                    "with": {"items": "{{ input.codes }}", "rules": [{"rule": "min", "value": 200}]},
                },
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "{{ steps.check.output.valid }}",
                    "parallelism": 2,
                    "on_item_error": "continue",
                    "steps": [
                        {
                            "id": "call",
                            "type": "http_request",
                            "retry": {"max_attempts": 1},
                            "with": {"url": "{target}/status/{{ item }}"},
                        }
                    ],
                },
                {
                    "id": "both",
                    "type": "parallel",
                    "branches": {
                        "a": [
                            {
                                "id": "sum",
                                "type": "transform",
                                "with": {
                                    "items": "{{ input.codes }}",
                                    "aggregate": {"metrics": {"n": {"count": True}}},
                                },
                            }
                        ],
                        "b": [{"id": "nap", "type": "delay", "with": {"duration": "1s"}}],
                    },
                },
            ],
        },
        {"codes": [200, 404, 100, 201]},
    ),
    ReplayCase(
        "flow-wait-signal",
        {
            "name": "flow-wait-signal",
            "steps": [
                {"id": "approval", "type": "wait", "with": {"event": "approve", "timeout": "1h"}},
                {"id": "after", "type": "transform", "with": {"value": "{{ steps.approval.output.by }}"}},
            ],
        },
        signals=(("approve", {"by": "ada"}),),
    ),
    ReplayCase(
        "flow-cancel-while-waiting",
        {
            "name": "flow-cancel-while-waiting",
            "steps": [{"id": "approval", "type": "wait", "with": {"event": "approve"}}],
            "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
        },
        cancel_after_s=1.0,
        cancel_by="ada",
    ),
    ReplayCase(
        "flow-wait-timeout-fails",
        {
            "name": "flow-wait-timeout-fails",
            "failure": {"suspend": False, "retries": [60]},
            "steps": [{"id": "approval", "type": "wait", "with": {"event": "approve", "timeout": "500ms"}}],
        },
    ),
    ReplayCase(
        "flow-wait-zero-timeout",
        {
            "name": "flow-wait-zero-timeout",
            "failure": {"suspend": False, "retries": [60]},
            "steps": [
                {"id": "approval", "type": "wait", "with": {"event": "approve", "timeout": "{{ input.t }}"}}
            ],
        },
        {"t": 0},
    ),
    ReplayCase(
        "flow-park-and-retry",
        {
            "name": "flow-park-and-retry",
            "input": {"type": "object"},
            "failure": {"suspend": True, "retries": []},
            "steps": [
                {"id": "call", "type": "http_request", "with": {"url": "{{ input.url }}"}},
                {"id": "after", "type": "transform", "with": {"value": "{{ steps.call.output.status }}"}},
            ],
        },
        {"url": "{target}/status/422"},
        retry_patch={"url": "{target}/echo"},
    ),
    ReplayCase(
        "flow-stages-and-advance",
        {
            "name": "flow-stages-and-advance",
            "steps": [
                {"id": "first", "type": "stage", "with": {"stage": "replay-echo", "input": "{{ input }}"}},
                {
                    "id": "held",
                    "type": "stage",
                    "with": {
                        "stage": "unserved",
                        "input": "{{ steps.first.output }}",
                        "heartbeat_timeout": 5,
                    },
                },
                {"id": "after", "type": "transform", "with": {"value": "{{ steps.held.output.by }}"}},
            ],
        },
        {"n": 1},
        advance={"by": "hand"},
    ),
]


def _batched_loop(name: str) -> dict[str, Any]:
    """A loop longer than its ``batch_size``: its batches run as child workflows."""
    return {
        "name": name,
        "steps": [
            {
                "id": "each",
                "type": "foreach",
                "items": "{{ input.items }}",
                "batch_size": 2,
                "parallelism": 2,
                "on_item_error": "continue",
                "steps": [{"id": "inv", "type": "transform", "with": {"value": "{{ 10 / item }}"}}],
            },
            {"id": "after", "type": "transform", "with": {"value": "{{ steps.each.output.failed }}"}},
        ],
    }


LOOPS: list[ReplayCase] = [
    # Recorded before PATCH_FOREACH_CHILDREN, when the batches ran one at a time: the old path must replay.
    ReplayCase("flow-foreach-batches", _batched_loop("flow-foreach-batches"), {"items": [1, 2, 0, 4, 5]}),
    ReplayCase("flow-foreach-children", _batched_loop("flow-foreach-children"), {"items": [1, 2, 0, 4, 5]}),
    ReplayCase(
        "flow-foreach-children-cancelled",
        {
            "name": "flow-foreach-children-cancelled",
            "steps": [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "{{ input.items }}",
                    "batch_size": 2,
                    "parallelism": 4,
                    "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
                }
            ],
        },
        {"items": list(range(12))},
        cancel_after_s=3.0,
    ),
]


_NEEDS_SERVICES = frozenset({"stage", "data_fetch", "database_query"})


def all_cases() -> list[ReplayCase]:
    """Every case the recorder runs: the features above and the examples that run offline."""
    examples = [
        ReplayCase(f"example-{path.stem}", _example(path.name), EXAMPLE_INPUTS.get(path.stem, {}))
        for path in sorted(EXAMPLES.glob("*.yaml"))
        # Pipelines need their stage workers, store tables and files (flow-stages-and-advance covers
        # stages); connector steps need the demo marketplace and its connectors.
        if not _NEEDS_SERVICES & {step.get("type") for step in _example(path.name)["steps"]}
    ]
    return FEATURES + FLOW + LOOPS + examples
