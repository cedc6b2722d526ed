"""Filters the list routes share. A value no execution can carry (a state that is not one, a name that is not
a slug) is a 422 naming the parameter, not an empty list that reads as "nothing matched"."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import Field

from core import names
from workflows.definition import SLUG
from workflows.states import ExecutionState

STAGE = rf"^({names.STAGE_NEW}|{names.STAGE_DONE}|{SLUG.strip('^$')})$"
"""What ``ConveyorStage`` holds: NEW, a stage's name, or DONE."""

DefinitionFilter = Annotated[
    str | None, Query(pattern=SLUG, max_length=63, description="only those of this definition")
]
StateFilter = Annotated[ExecutionState | None, Query(description="only executions in this state")]
StageFilter = Annotated[
    str | None, Query(pattern=STAGE, max_length=63, description="only pipeline items at this stage")
]

DefinitionField = Annotated[str, Field(pattern=SLUG, max_length=63)]
StageField = Annotated[str, Field(pattern=STAGE, max_length=63)]
