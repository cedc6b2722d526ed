"""Mermaid flowcharts of definitions, for the API and the README."""

from __future__ import annotations

from workflows.definition import Definition, Step, dependencies


def definition_flowchart(definition: Definition) -> str:
    """The definition's steps and their dependencies as a Mermaid ``flowchart TD``."""
    lines = ["flowchart TD", "    start((start))"]
    ends = _block(definition.steps, "start", lines)
    lines.append("    finish((end))")
    lines += [f"    {end} --> finish" for end in ends]
    if definition.on_error:
        lines.append("    failed((failed))")
        _block(definition.on_error, "failed", lines, style="-.->")
    return "\n".join(lines) + "\n"


def _block(block: tuple[Step, ...], entry: str, lines: list[str], *, style: str = "-->") -> list[str]:
    """Draw a step list entered from node ``entry``; returns the nodes nothing in the list waits for."""
    waits_for = dependencies(block)
    waited_on = {dep for deps in waits_for.values() for dep in deps}
    for step in block:
        lines.append(f"    {_node(step)}")
        deps = waits_for[step.id]
        lines += [f"    {_id(dep)} --> {_id(step.id)}" for dep in deps]
        if not deps:
            lines.append(f"    {entry} {style} {_id(step.id)}")
        for case in step.cases or ():
            label = case.when if isinstance(case.when, str) else str(case.when).lower()
            _block(case.steps, _id(step.id), lines, style=f'-->|"{_escape(label)}"|')
        if step.default:
            _block(step.default, _id(step.id), lines, style="-->|default|")
        if isinstance(step.on_error, tuple):
            _block(step.on_error, _id(step.id), lines, style="-.->|on error|")
    return [_id(step.id) for step in block if step.id not in waited_on] or [entry]


def _id(step_id: str) -> str:
    # Prefixed so a step called "start" or "end" cannot collide with the chart's own nodes.
    return f"s_{step_id}"


def _node(step: Step) -> str:
    label = f"{step.id}<br/><small>{step.type}{', optional' if step.optional else ''}</small>"
    opening, closing = ("{{", "}}") if step.type == "switch" else ("[", "]")
    return f'{_id(step.id)}{opening}"{_escape(label)}"{closing}'


def _escape(text: str) -> str:
    return text.replace('"', "#quot;").replace("|", "#124;")
