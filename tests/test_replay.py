"""Committed histories must replay on the current interpreter: a change that breaks one needs
``workflow.patched`` (or, for an intended new behaviour, new histories via ``make replay-record``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.replay.cases import HISTORIES
from workflows.interpreter import DefinitionWorkflow
from workflows.sandbox import workflow_runner

FILES = sorted(HISTORIES.glob("*.json"))


def test_histories_are_committed() -> None:
    assert len(FILES) >= 4, "record them with `make replay-record`"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays(path: Path) -> None:
    history = _load(path)
    replayer = Replayer(workflows=[DefinitionWorkflow], workflow_runner=workflow_runner())
    await replayer.replay_workflow(history)


def _load(path: Path) -> WorkflowHistory:
    # Replayed under the id it ran with: the ids of the children it started derive from it.
    text = path.read_text()
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    return WorkflowHistory.from_json(started.get("workflowId", path.stem), text)
