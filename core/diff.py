"""What changed between two versions of a definition: a unified YAML diff plus per-step changes."""

from __future__ import annotations

import difflib
from typing import Any

import yaml


def diff_documents(
    old: dict[str, Any], new: dict[str, Any], *, old_label: str, new_label: str
) -> dict[str, Any]:
    """Steps added, removed and changed (by id, nested too), other changed keys, and a unified diff."""
    old_steps, new_steps = _steps_by_id(old), _steps_by_id(new)
    unified = difflib.unified_diff(
        _yaml(old).splitlines(keepends=True),
        _yaml(new).splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return {
        "steps_added": sorted(new_steps.keys() - old_steps.keys()),
        "steps_removed": sorted(old_steps.keys() - new_steps.keys()),
        "steps_changed": sorted(
            k for k in old_steps.keys() & new_steps.keys() if old_steps[k] != new_steps[k]
        ),
        "fields_changed": sorted(
            k for k in old.keys() | new.keys() if k != "steps" and old.get(k) != new.get(k)
        ),
        "unified": "".join(unified),
    }


def _yaml(document: dict[str, Any]) -> str:
    # Sorted keys: two saves of the same content in another key order must not show as a change.
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True)


def _steps_by_id(document: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(steps: Any) -> None:
        if not isinstance(steps, list):
            return
        for step in steps:
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                found[step["id"]] = step
                walk(step.get("default"))
                walk(step.get("on_error"))
                for case in step.get("cases") or []:
                    if isinstance(case, dict):
                        walk(case.get("steps"))

    walk(document.get("steps"))
    walk(document.get("on_error"))
    return found
