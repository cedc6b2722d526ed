"""``custom_code`` on the real dev server: JSON in and out, user errors with tracebacks, and the limits
(time, memory, output) that stop runaway code while the worker goes on serving other executions."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.support.outcome import Failure, completes, fails, failure_of
from tests.support.processes import pids_with_argument
from tests.support.run import start
from tests.support.waiting import until
from workflows.definition import DefinitionInvalid, parse
from workflows.interpreter import DefinitionWorkflow

NO_RETRY = {"max_attempts": 1}


def code(step_id: str, source: str, **with_: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "custom_code", "with": {"code": source, **with_}, "retry": NO_RETRY}


def definition(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "code", "steps": list(steps), **fields}


QUICK = definition(code("quick", "def main(input):\n    return input + 1", input="{{ input.n }}"))


async def still_serving(client: Client, worker: Worker) -> None:
    """Another execution on the same worker completes promptly."""
    began = time.monotonic()
    result = await completes(client, worker.task_queue, QUICK, {"n": 41})
    assert result.output == 42
    assert time.monotonic() - began < 5


async def fails_while_others_run(client: Client, worker: Worker, step: dict[str, Any]) -> Failure:
    """Run a failing step and, while it runs, another execution; then one more after it failed."""
    handle = await start(client, worker.task_queue, definition(step))
    await still_serving(client, worker)
    failure = await failure_of(handle)
    await still_serving(client, worker)
    return failure


async def test_main_gets_the_input_and_its_result_is_the_output(client: Client, worker: Worker) -> None:
    source = (
        "import statistics\n"
        "def main(input):\n"
        "    print('pricing', len(input['prices']), 'items')\n"
        "    mean = statistics.mean(input['prices'])\n"
        "    return {'sku': input['sku'], 'mean': mean, 'ok': True, 'none': None}\n"
    )
    handle = await start(
        client,
        worker.task_queue,
        definition(code("price", source, input={"sku": "{{ input.sku }}", "prices": "{{ input.prices }}"})),
        {"sku": "A-1", "prices": [1, 2, 6]},
    )
    result = await handle.result()
    assert result.state == "COMPLETED"
    assert result.output == {"sku": "A-1", "mean": 3, "ok": True, "none": None}
    logs = await handle.query(DefinitionWorkflow.logs)
    assert any(line.message == "pricing 3 items" and line.step == "price" for line in logs)


async def test_a_global_result_is_the_output(client: Client, worker: Worker) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            code("first", "result = [x * 2 for x in input]", input=[1, 2, 3]),
            code("second", "result = sum(input)", input="{{ steps.first.output }}"),
        ),
    )
    assert result.output == 12


async def test_an_exception_fails_the_step_with_the_users_traceback(client: Client, worker: Worker) -> None:
    source = (
        "def share(total, people):\n"
        "    return total / people\n"
        "\n"
        "def main(input):\n"
        "    print('splitting')\n"
        "    return share(10, 0)\n"
    )
    failure = await fails_while_others_run(client, worker, code("split", source))
    assert failure.type == "CodeError"
    assert failure.error["step"] == "split"
    assert failure.error["message"] == "ZeroDivisionError: division by zero"
    traceback = failure.error["details"]["traceback"]
    assert 'File "<custom_code>", line 6, in main' in traceback
    assert 'File "<custom_code>", line 2, in share' in traceback
    assert "return total / people" in traceback
    assert "activities" not in traceback and "-c" not in traceback, "only the user's frames"
    assert failure.error["details"]["output"] == ["splitting"], "what it printed before it failed"
    assert failure.step("split")["attempts"] == 1


async def test_an_infinite_loop_is_stopped_by_the_timeout(client: Client, worker: Worker) -> None:
    began = time.monotonic()
    failure = await fails_while_others_run(
        client, worker, code("spin", "while True:\n    pass", timeout="1s")
    )
    assert failure.type == "CodeTimeout"
    assert "1s timeout" in failure.error["message"]
    assert time.monotonic() - began < 10


async def test_allocating_4_gb_is_stopped(client: Client, worker: Worker) -> None:
    failure = await fails_while_others_run(
        client,
        worker,
        code("hog", "def main(input):\n    block = bytearray(4 * 1024**3)\n    return len(block)"),
    )
    assert failure.type == "CodeMemoryExceeded"
    assert "MemoryError" in failure.error["details"]["traceback"]


async def test_growing_memory_step_by_step_is_stopped(client: Client, worker: Worker) -> None:
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))"
    failure = await fails(client, worker.task_queue, definition(code("grow", source, memory_mb=128)))
    assert failure.type == "CodeMemoryExceeded"


async def test_printing_100_mb_is_stopped(client: Client, worker: Worker) -> None:
    source = "line = 'x' * 1_000_000\nfor _ in range(100):\n    print(line)\nresult = 'done'"
    began = time.monotonic()
    failure = await fails_while_others_run(client, worker, code("chatty", source))
    assert failure.type == "CodeOutputTooLarge"
    assert failure.error["message"] == "the code printed more than 1000000 bytes and was stopped"
    assert time.monotonic() - began < 10


async def test_a_result_over_max_output_bytes_is_stopped(client: Client, worker: Worker) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(code("big", "result = 'x' * 5000", max_output_bytes=1000)),
    )
    assert failure.type == "CodeOutputTooLarge"
    assert "returned more than 1000 bytes" in failure.error["message"]


async def test_a_result_that_is_not_json_fails(client: Client, worker: Worker) -> None:
    failure = await fails(client, worker.task_queue, definition(code("odd", "result = {1, 2}")))
    assert failure.type == "CodeError"
    assert "not JSON" in failure.error["message"]


async def test_the_child_has_an_empty_environment_and_a_private_directory(
    client: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SECRET_IN_WORKER_ENV", "leak")
    scratch = f"scratch-{uuid.uuid4().hex}.txt"
    source = (
        "import os, sys\n"
        "def main(name):\n"
        "    open(name, 'w').write('temporary')\n"
        "    return {'env': dict(os.environ), 'cwd': os.getcwd(), 'isolated': sys.flags.isolated,\n"
        "            'no_site': sys.flags.no_site, 'files': sorted(os.listdir('.'))}\n"
    )
    result = await completes(client, worker.task_queue, definition(code("env", source, input=scratch)))
    output = result.output
    assert output["env"] == {}
    assert output["isolated"] == 1 and output["no_site"] == 1
    assert output["files"] == [scratch], "a directory of its own, empty but for what it wrote"
    assert not await asyncio.to_thread(os.path.exists, os.path.join(output["cwd"], scratch)), "private"


async def test_printed_lines_are_kept_as_capped_log_lines(client: Client, worker: Worker) -> None:
    source = "for i in range(200):\n    print('line', i, 'y' * 1000 if i == 0 else '')\nresult = 1"
    handle = await start(client, worker.task_queue, definition(code("talk", source)))
    await handle.result()
    lines = [line.message for line in await handle.query(DefinitionWorkflow.logs) if line.step == "talk"]
    assert lines[1] == "line 1 "
    assert len(lines[0]) <= 501
    assert "150 more line(s) not kept" in lines[50]


async def test_a_timed_out_step_kills_the_sandbox(client: Client, worker: Worker) -> None:
    """The step's own timeout cancels the activity, which kills the sandbox and the code in it."""
    marker = f"conveyor-nap-{uuid.uuid4().hex}"
    source = (
        "import os, sys\n"
        "def main(marker):\n"
        "    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', marker])\n"
    )
    handle = await start(
        client,
        worker.task_queue,
        definition(code("nap", source, input=marker, timeout="60s") | {"timeout": "1s"}),
    )
    failure = await failure_of(handle)
    assert failure.type == "StepTimeout"

    async def gone() -> bool:
        return not await asyncio.to_thread(pids_with_argument, marker)

    await until(gone, "the code's process is killed after its step timed out", within_s=15)
    await still_serving(client, worker)


@pytest.mark.parametrize(
    ("with_", "path", "message"),
    [
        ({"code": "def main(input:\n    return 1"}, "$.steps[0].with.code", "code does not compile (line 1)"),
        ({}, "$.steps[0].with.code", "Field required"),
        ({"code": ""}, "$.steps[0].with.code", "at least 1 character"),
        ({"code": "result = 1", "timeout": "2h"}, "$.steps[0].with.timeout", "at most 1h"),
        ({"code": "result = 1", "memory_mb": 8}, "$.steps[0].with.memory_mb", "greater than or equal to 32"),
        ({"code": "result = 1", "max_output_bytes": 0}, "$.steps[0].with.max_output_bytes", "greater than"),
        ({"code": "result = 1", "cmd": "ls"}, "$.steps[0].with.cmd", "Extra inputs"),
    ],
)
def test_bad_config_is_rejected_at_validation(with_: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        parse({"name": "code", "steps": [{"id": "run", "type": "custom_code", "with": with_}]})
    problems = {p.path: p.message for p in caught.value.problems}
    assert path in problems, problems
    assert message in problems[path]


def test_templated_code_is_checked_when_it_runs_not_at_validation() -> None:
    parse(
        {"name": "code", "steps": [{"id": "run", "type": "custom_code", "with": {"code": "{{ input.src }}"}}]}
    )


async def test_templated_code_that_does_not_compile_fails_the_step(client: Client, worker: Worker) -> None:
    failure = await fails(
        client, worker.task_queue, definition(code("run", "{{ input.src }}")), {"src": "def main(:"}
    )
    assert failure.type == "ConfigInvalid"
    assert "code does not compile" in failure.error["message"]
