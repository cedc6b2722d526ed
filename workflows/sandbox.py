"""The workflow sandbox Conveyor's workers and replayers use.

Our pure modules and the libraries they use (Jinja2, pydantic, jsonschema) are passed through: imported
once per process instead of once per workflow run, which keeps workflow start cheap and lets compiled
templates be cached across runs. They are deterministic, so sharing them is safe.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH_MODULES = (
    "jinja2",
    "markupsafe",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "rpds",
    "attrs",
    "core.names",
    "workflows.definition",
    "workflows.durations",
    "workflows.errors",
    "workflows.data_ops",
    "workflows.expressions",
    "workflows.fanout",
    "workflows.inputs",
    "workflows.messages",
    "workflows.states",
    "workflows.steps",
    "workflows.template_budget",
    "workflows.template_checks",
    "workflows.template_sizes",
    "workflows.template_sandbox",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """A sandboxed runner with Conveyor's pure modules passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )
