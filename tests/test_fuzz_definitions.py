"""Hypothesis-generated definition documents through ``POST /definitions/validate`` and the interpreter.

Validation must answer every document (valid, near miss or garbage) with 200 and a report, never a 5xx.
A sample of the valid ones then runs on the real dev server with a real worker: each execution must reach
a terminal state (or park, SUSPENDED or WAITING, for an operator or a signal) within a bound; anything
still running then is cancelled and fails the test as stuck.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from temporalio.testing import WorkflowEnvironment

from tests.support import processes
from tests.support.definition_documents import definitions, documents
from tests.support.target import Target

ADMIN_KEY = "cvk_fuzzdefs_0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
VALIDATIONS = 150
RUNS = 40
"""Generated definitions offered to the run test; the valid ones among them are run."""
BOUND_S = 90.0
"""Every run of the sample must end or park within this; the longest generated wait is a few seconds."""
SETTLED = {"COMPLETED", "FAILED", "CANCELLED", "SUSPENDED", "WAITING"}

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
async def defs_url(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """An API and a worker as subprocesses on the session's dev server."""
    folder = tmp_path_factory.mktemp("fuzzdefs")
    async with processes.api_stack(
        folder,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"tq-fuzzdefs-{uuid.uuid4()}",
        database_url=f"sqlite+aiosqlite:///{folder}/store.db",
        bootstrap_admin_key=ADMIN_KEY,
        auth="on",
        outbound_allow="127.0.0.1/32",
    ) as url:
        yield url


def test_validation_answers_every_document(defs_url: str, target: Target) -> None:
    seen = {"valid": 0, "invalid": 0}
    with httpx.Client(base_url=defs_url, headers=AUTH, timeout=30) as http:

        @settings(FUZZ, max_examples=VALIDATIONS)
        @given(document=documents(target.url))
        def validate(document: Any) -> None:
            answer = http.post("/api/v1/definitions/validate", json=document)
            assert answer.status_code < 500, answer.text
            if answer.status_code == 200:
                report = answer.json()
                assert report["valid"] is not bool(report["problems"]), report
                seen["valid" if report["valid"] else "invalid"] += 1
                for problem in report["problems"]:
                    assert problem["path"] and problem["message"], problem
            else:
                # Not an object at all: a 4xx in the API's error format.
                assert answer.status_code in (400, 422), answer.text
                assert answer.json()["error_code"], answer.text
                seen["invalid"] += 1

        validate()
    print(
        f"[fuzz] validated {sum(seen.values())} documents: {seen['valid']} valid, {seen['invalid']} invalid"
    )
    # The strategies are meant to produce both; if either is missing they test less than they claim.
    assert seen["valid"] > 0 and seen["invalid"] > 0


async def test_valid_definitions_never_get_stuck(defs_url: str, target: Target) -> None:
    valid: list[dict[str, Any]] = []
    with httpx.Client(base_url=defs_url, headers=AUTH, timeout=30) as blocking:

        @settings(FUZZ, max_examples=RUNS)
        @given(document=definitions(target.url))
        def collect(document: dict[str, Any]) -> None:
            answer = blocking.post("/api/v1/definitions/validate", json=document)
            assert answer.status_code == 200, answer.text
            if answer.json()["valid"]:
                valid.append(document)

        # Blocking calls while the target (served on this loop) is idle: validation never calls it.
        collect()
    assert valid, "the definitions strategy produced no valid definition"

    async with httpx.AsyncClient(base_url=defs_url, headers=AUTH, timeout=30) as http:
        started: list[str] = []
        for index, generated in enumerate(valid):
            name = f"fuzz-run-{uuid.uuid4().hex[:8]}-{index}"
            saved = await http.post("/api/v1/definitions", json={**generated, "name": name})
            assert saved.status_code == 201, saved.text
            run = await http.post(f"/api/v1/definitions/{name}/executions", json={"input": {}})
            assert run.status_code == 201, run.text
            started.append(run.json()["execution_id"])

        states: dict[str, str] = {}
        errors: dict[str, int] = {}
        try:
            async with asyncio.timeout(BOUND_S):
                while len(states) < len(started):
                    for execution_id in started:
                        if execution_id in states:
                            continue
                        view = await http.get(f"/api/v1/executions/{execution_id}")
                        assert view.status_code == 200, view.text
                        if view.json()["state"] in SETTLED:
                            states[execution_id] = view.json()["state"]
                            error = view.json().get("error") or {}
                            if error:
                                errors[str(error.get("code"))] = errors.get(str(error.get("code")), 0) + 1
                    await asyncio.sleep(0.5)
        except TimeoutError:
            pass
        stuck = [execution_id for execution_id in started if execution_id not in states]
        for execution_id in stuck:
            await http.post(f"/api/v1/executions/{execution_id}/terminate", json={"reason": "stuck in fuzz"})
        tally = {state: list(states.values()).count(state) for state in sorted(set(states.values()))}
        print(f"[fuzz] ran {len(started)} valid generated definitions: {tally}, stuck {len(stuck)}")
        print(f"[fuzz] errors of the failed and suspended ones: {errors}")
        for execution_id in [*stuck, *(e for e, s in states.items() if s in {"SUSPENDED", "WAITING"})]:
            await http.post(f"/api/v1/executions/{execution_id}/cancel")
        assert not stuck, f"executions neither ended nor parked within {BOUND_S:g}s: {stuck}"
