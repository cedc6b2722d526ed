"""Every name that crosses a process boundary: workflow, query, update and signal names, search attributes.

The API, the worker, the tests and the README all take names from here, so a rename is one edit.
"""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey

DEFINITION_WORKFLOW: Final = "DefinitionWorkflow"
"""Workflow type of the interpreter that runs every definition."""

QUERY_DESCRIBE: Final = "describe"
"""Query: the execution's state, steps and output so far."""

QUERY_HISTORY: Final = "history"
"""Query: the recorded state transitions."""

SA_DEFINITION: Final = SearchAttributeKey.for_keyword("ConveyorDefinition")
SA_VERSION: Final = SearchAttributeKey.for_int("ConveyorVersion")
SA_STATE: Final = SearchAttributeKey.for_keyword("ConveyorState")
SA_STAGE: Final = SearchAttributeKey.for_keyword("ConveyorStage")
SA_TRIGGER: Final = SearchAttributeKey.for_keyword("ConveyorTrigger")

SEARCH_ATTRIBUTES: Final = (SA_DEFINITION, SA_VERSION, SA_STATE, SA_STAGE, SA_TRIGGER)
"""Registered on the dev server at start (``--search-attribute Name=Type``)."""


def search_attribute_flags() -> list[str]:
    """The ``temporal server start-dev`` arguments that register Conveyor's search attributes."""
    kinds = {SA_VERSION.name: "Int"}
    flags: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={kinds.get(key.name, 'Keyword')}"]
    return flags
