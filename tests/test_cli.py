"""The ``conveyor`` command line, run as a real subprocess against the real API on loopback.

The CLI is synchronous and the API fixture lives on the test's event loop, so every call is a child process
(``python -m api.cli``) awaited with ``asyncio.create_subprocess_exec``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from api.cli import hoist_global_options, parse_sse
from tests.support.target import Target, free_port

ROOT = Path(__file__).resolve().parents[1]

GREETER = {
    "name": "cli-greeter",
    "description": "greets",
    "input": {"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}},
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "{{ 'hi ' ~ input.who }}"}},
        {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
    ],
    "output": {"greeting": "{{ steps.shout.output }}"},
}

SLEEPER = {
    "name": "cli-sleeper",
    "steps": [{"id": "nap", "type": "delay", "with": {"duration": "1h"}}],
    "on_error": [{"id": "tidy", "type": "set", "with": {"tidied": True}}],
}


def caller(target: Target) -> dict[str, Any]:
    """A definition whose one http step calls the URL in its input (a 422 parks it in SUSPENDED)."""
    return {
        "name": "cli-caller",
        "input": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
        "steps": [{"id": "call", "type": "http_request", "with": {"url": "{{ input.url }}"}}],
        "output": {"answer": "{{ steps.call.output }}"},
    }


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


async def conveyor(
    base_url: str | httpx.AsyncClient, *args: str, stdin: str | None = None, seconds: float = 60
) -> Run:
    """Run ``conveyor --api URL ARGS...`` in a child process; wide, colourless output for assertions."""
    url = str(base_url.base_url) if isinstance(base_url, httpx.AsyncClient) else base_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_API")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "--api",
        url,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), seconds
    )
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def write(tmp_path: Path, name: str, document: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return path


async def applied(api: httpx.AsyncClient, tmp_path: Path, document: dict[str, Any]) -> None:
    run = await conveyor(api, "apply", str(write(tmp_path, f"{document['name']}.yaml", document)))
    assert run.code == 0, run


async def state_of(api: httpx.AsyncClient, execution_id: str, wanted: str, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.2)):
        view = (await api.get(f"/api/v1/executions/{execution_id}")).json()
        if view["state"] == wanted:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{execution_id} is {view['state']}, not {wanted}")


# --- definitions --------------------------------------------------------------------------------------------


async def test_validate_a_good_and_a_bad_file(api: httpx.AsyncClient, tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GREETER)
    bad = write(tmp_path, "bad.json", {"name": "bad", "steps": [{"id": "x", "type": "teleport"}]})
    run = await conveyor(api, "validate", str(good))
    assert run.code == 0, run
    assert "good.yaml: valid" in run.out

    run = await conveyor(api, "validate", str(good), str(bad))
    assert run.code == 1, run
    assert "bad.json: 1 problem(s)" in run.out or "bad.json:" in run.out
    assert "$.steps[0]" in run.out

    run = await conveyor(api, "validate", str(bad), "--json")
    assert run.code == 1
    [report] = run.json
    assert report["valid"] is False and report["problems"][0]["path"].startswith("$.steps[0]")

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    run = await conveyor(api, "validate", str(broken))
    assert run.code == 1 and "INVALID_YAML" in run.err


async def test_apply_then_list_show_graph_publish(api: httpx.AsyncClient, tmp_path: Path) -> None:
    path = write(tmp_path, "greeter.yaml", GREETER)
    run = await conveyor(api, "apply", str(path))
    assert run.code == 0, run
    assert "cli-greeter" in run.out and "published" in run.out and "yes" in run.out

    again = await conveyor(api, "apply", str(write(tmp_path, "greeter.json", GREETER)), "--json")
    assert again.code == 0, again
    assert [(r["name"], r["version"], r["created"]) for r in again.json] == [("cli-greeter", 1, False)]

    changed = {**GREETER, "description": "greets louder"}
    draft = await conveyor(api, "--json", "apply", str(write(tmp_path, "v2.yaml", changed)))
    assert draft.json[0]["version"] == 2 and draft.json[0]["status"] == "draft"

    listing = await conveyor(api, "definitions")
    assert listing.code == 0 and "cli-greeter" in listing.out and "greets" in listing.out

    shown = await conveyor(api, "show", "cli-greeter")
    assert shown.code == 0 and "active version: v1" in shown.out and "id: greet" in shown.out

    published = await conveyor(api, "publish", "cli-greeter", "2")
    assert published.code == 0 and "v2 is now active" in published.out
    assert (await api.get("/api/v1/definitions/cli-greeter")).json()["active_version"] == 2

    mermaid = await conveyor(api, "graph", "cli-greeter")
    assert mermaid.code == 0 and mermaid.out.startswith("flowchart TD") and "greet" in mermaid.out


async def test_apply_of_an_invalid_file_shows_each_problem(api: httpx.AsyncClient, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", {"name": "bad", "steps": [{"id": "x", "type": "teleport"}]})
    run = await conveyor(api, "apply", str(bad))
    assert run.code == 1
    assert "DEFINITION_INVALID" in run.err and "$.steps[0]" in run.err


# --- executions ---------------------------------------------------------------------------------------------


async def test_start_follow_prints_the_steps_and_completes(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await applied(api, tmp_path, GREETER)
    run = await conveyor(api, "start", "cli-greeter", "--input", '{"who": "ada"}')
    assert run.code == 0, run
    assert "greet" in run.out and "shout" in run.out
    assert "COMPLETED" in run.out and "HI ADA" in run.out

    data = tmp_path / "input.yaml"
    data.write_text("who: bob\n")
    run = await conveyor(api, "start", "cli-greeter", "--input-file", str(data), "--json")
    assert run.code == 0, run
    final = json.loads(run.out.strip().splitlines()[-1])
    assert final["state"] == "COMPLETED" and final["output"] == {"greeting": "HI BOB"}


async def test_start_no_follow_then_inspect(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await applied(api, tmp_path, GREETER)
    run = await conveyor(api, "start", "cli-greeter", "--json", "--no-follow", "--input", '{"who": "cy"}')
    assert run.code == 0, run
    execution_id = run.json["execution_id"]
    assert execution_id.startswith("cli-greeter/")
    await state_of(api, execution_id, "COMPLETED")

    shown = await conveyor(api, "execution", execution_id)
    assert shown.code == 0, shown
    assert "COMPLETED" in shown.out and "HI CY" in shown.out
    assert "greet" in shown.out and "completed" in shown.out

    followed = await conveyor(api, "execution", execution_id, "--follow")
    assert followed.code == 0 and "COMPLETED" in followed.out

    transitions = await conveyor(api, "history", execution_id)
    assert transitions.code == 0 and "PROCESSING" in transitions.out and "COMPLETED" in transitions.out

    for _ in range(50):  # visibility catches up shortly after the close
        listed = await conveyor(api, "executions", "--definition", "cli-greeter", "--state", "completed")
        if execution_id in listed.out:
            break
        await asyncio.sleep(0.2)
    assert execution_id in listed.out

    same = await conveyor(
        api, "start", "cli-greeter", "--no-follow", "--id", "fixed", "--input", '{"who":"d"}'
    )
    again = await conveyor(
        api, "start", "cli-greeter", "--no-follow", "--id", "fixed", "--input", '{"who":"d"}'
    )
    assert "cli-greeter/fixed" in same.out and "existing execution" in again.out


async def test_cancel_a_long_delay(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await applied(api, tmp_path, SLEEPER)
    execution_id = (await conveyor(api, "start", "cli-sleeper", "--no-follow", "--json")).json["execution_id"]
    await state_of(api, execution_id, "PROCESSING")
    run = await conveyor(api, "cancel", execution_id)
    assert run.code == 0, run
    assert execution_id in run.out and "cancel requested" in run.out
    await state_of(api, execution_id, "CANCELLED")

    again = await conveyor(api, "cancel", execution_id)
    assert again.code == 1
    assert "EXECUTION_CLOSED" in again.err and "HTTP 409" in again.err and "CANCELLED" in again.err


async def test_api_errors_exit_1_with_the_error_code(api: httpx.AsyncClient, tmp_path: Path) -> None:
    missing = await conveyor(api, "start", "no-such-definition")
    assert missing.code == 1 and "DEFINITION_NOT_FOUND" in missing.err and "HTTP 404" in missing.err

    await applied(api, tmp_path, GREETER)
    invalid = await conveyor(api, "start", "cli-greeter", "--input", '{"who": 3}')
    assert invalid.code == 1 and "INPUT_INVALID" in invalid.err and "$.input.who" in invalid.err

    not_json = await conveyor(api, "start", "cli-greeter", "--input", "{nope")
    assert not_json.code == 1 and "--input is not valid JSON" in not_json.err

    unknown = await conveyor(api, "execution", "cli-greeter/nothing-here")
    assert unknown.code == 1 and "EXECUTION_NOT_FOUND" in unknown.err


async def test_unreachable_api() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = await conveyor(url, "definitions")
    assert run.code == 1
    assert f"cannot reach the API at {url}" in run.err and "make run" in run.err


# --- control of running and parked executions -----------------------------------------------------------


async def test_retry_and_skip_a_suspended_execution(
    api: httpx.AsyncClient, target: Target, tmp_path: Path
) -> None:
    await applied(api, tmp_path, caller(target))
    parked = await conveyor(
        api, "start", "cli-caller", "--input", json.dumps({"url": f"{target.url}/status/422"})
    )
    assert parked.code == 2, parked
    assert "SUSPENDED" in parked.out and "conveyor retry" in parked.out and "conveyor skip" in parked.out
    execution_id = parked.out.split("started ", 1)[1].split()[0]

    retried = await conveyor(
        api, "retry", execution_id, "--input-patch", json.dumps({"url": f"{target.url}/echo"})
    )
    assert retried.code == 0, retried
    done = await conveyor(api, "execution", execution_id, "--follow")
    assert done.code == 0 and "COMPLETED" in done.out, done

    skipped = await conveyor(
        api, "start", "cli-caller", "--json", "--input", json.dumps({"url": f"{target.url}/status/422"})
    )
    assert skipped.code == 2
    execution_id = json.loads(skipped.out.splitlines()[0])["execution_id"]
    run = await conveyor(api, "skip", execution_id, "--output", '{"stand_in": true}')
    assert run.code == 0, run
    done = await conveyor(api, "--json", "execution", execution_id, "--follow")
    assert done.code == 0
    assert json.loads(done.out.splitlines()[-1])["output"] == {"answer": {"stand_in": True}}

    conflict = await conveyor(api, "skip", execution_id, "--output", "1")
    assert conflict.code == 1 and "HTTP 409" in conflict.err


async def test_signal_then_logs(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await applied(api, tmp_path, SLEEPER)
    execution_id = (await conveyor(api, "start", "cli-sleeper", "--no-follow", "--json")).json["execution_id"]
    await state_of(api, execution_id, "PROCESSING")
    run = await conveyor(api, "signal", execution_id, "approve", "--payload", '{"ok": true}')
    assert run.code == 0 and "signal approve sent" in run.out, run
    for _ in range(50):
        logged = await conveyor(api, "logs", execution_id)
        if "signal approve" in logged.out:
            break
        await asyncio.sleep(0.2)
    assert logged.code == 0 and "signal approve" in logged.out, logged
    assert (await conveyor(api, "terminate", execution_id, "--reason", "done")).code == 0
    await state_of(api, execution_id, "CANCELLED")


async def test_suspend_and_resume(api: httpx.AsyncClient, tmp_path: Path) -> None:
    document = {
        "name": "cli-steps",
        "steps": [
            # A wait, not a delay: the suspend must arrive before the step ends, however slow the machine.
            {"id": "hold", "type": "wait", "with": {"event": "go", "timeout": "1h"}},
            {"id": "after", "type": "transform", "with": {"value": "done"}},
        ],
    }
    await applied(api, tmp_path, document)
    execution_id = (await conveyor(api, "start", "cli-steps", "--no-follow", "--json")).json["execution_id"]
    await state_of(api, execution_id, "WAITING")
    run = await conveyor(api, "suspend", execution_id)
    assert run.code == 0, run
    assert (await conveyor(api, "signal", execution_id, "go")).code == 0
    parked = await conveyor(api, "execution", execution_id, "--follow")
    assert parked.code == 2 and "conveyor resume" in parked.out, parked
    run = await conveyor(api, "resume", execution_id)
    assert run.code == 0, run
    done = await conveyor(api, "execution", execution_id, "--follow")
    assert done.code == 0 and "COMPLETED" in done.out


async def test_bulk_retry_asks_after_a_dry_run(
    api: httpx.AsyncClient, target: Target, tmp_path: Path
) -> None:
    await applied(api, tmp_path, caller(target))
    url = json.dumps({"url": f"{target.url}/status/422"})
    for _ in range(3):
        assert (await conveyor(api, "start", "cli-caller", "--input", url)).code == 2

    async def suspended() -> int:
        page = (await api.get("/api/v1/executions", params={"definition": "cli-caller"})).json()
        return sum(1 for row in page["executions"] if row["state"] == "SUSPENDED")

    for _ in range(50):
        if await suspended() == 3:
            break
        await asyncio.sleep(0.2)
    filters = ["--definition", "cli-caller", "--state", "SUSPENDED"]
    counted = await conveyor(api, "bulk", "retry", *filters, "--dry-run")
    assert counted.code == 0 and "3 execution(s) match" in counted.out, counted

    refused = await conveyor(api, "bulk", "retry", *filters, stdin="n\n")
    assert refused.code == 1 and "retry 3 execution(s)?" in refused.err
    assert await suspended() == 3

    # Retrying without a patch parks them again on the same 422: the report counts the retries accepted.
    done = await conveyor(api, "bulk", "retry", *filters, stdin="y\n")
    assert done.code == 0, done
    assert "matched" in done.out and "3" in done.out

    nothing = await conveyor(api, "bulk", "cancel", "--definition", "no-such", "--yes", "--json")
    assert nothing.code == 0 and nothing.json["matched"] == 0


# --- pure parts of the client ------------------------------------------------------------------------------


def test_parse_sse_joins_data_lines_and_skips_comments() -> None:
    text = (
        ': hello\n\nid: 7\nevent: step_started\ndata: {"seq": 7,\ndata:  "type": "step_started"}\n\nid: 8\n'
    )
    events = list(parse_sse(text.split("\n")))
    assert [(e.seq, e.type) for e in events] == [(7, "step_started")]


def test_global_options_may_follow_the_command() -> None:
    assert hoist_global_options(["start", "x", "--json", "--api", "http://h", "--key=k", "--", "--json"]) == [
        "--json",
        "--api",
        "http://h",
        "--key=k",
        "start",
        "x",
        "--",
        "--json",
    ]
